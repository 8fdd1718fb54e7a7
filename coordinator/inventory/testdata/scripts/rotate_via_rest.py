import sys
for line in sys.stdin:
    print("received", len(line))
    break
