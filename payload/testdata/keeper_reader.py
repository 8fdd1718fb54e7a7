# Reads stdin exactly as Keeper's post-rotation scripts do, then prints what
# it decoded as JSON (ASCII only), with the key order of every object.
import base64
import json
import sys

params = None
records = None
for line in sys.stdin:
    params = json.loads(base64.b64decode(line).decode())
    records = json.loads(base64.b64decode(params['records']).decode())
    break

json.dump({
    "params": params,
    "records": records,
    "paramKeys": list(params),
    "recordKeys": [list(r) for r in records],
}, sys.stdout)
