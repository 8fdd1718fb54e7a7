# postrotate: set passwords with chpasswd (package executor/rotate).
# stdin: the login's own password for sudo -S, or an empty line; then the
# "user:password" lines for chpasswd. No secret is ever an argument: printf
# is a shell builtin.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if ! IFS= read -r pw; then
	echo "postrotate: no input on stdin" >&2
	exit 2
fi
if [ "$(id -u)" = 0 ]; then
	pw=
	exec chpasswd
fi
me=$(id -un)
if ! command -v sudo >/dev/null 2>&1; then
	echo "postrotate: $me is not root and sudo is not installed" >&2
	exit 1
fi
# Without input chpasswd changes nothing: this only asks whether sudo lets
# the login run it without a password.
if sudo -n chpasswd </dev/null >/dev/null 2>&1; then
	pw=
	exec sudo -n chpasswd
fi
if [ -z "$pw" ]; then
	echo "postrotate: $me is not root, sudo -n chpasswd is refused (no rule for it, or it needs a password), and the target has no password for sudo -S" >&2
	exit 1
fi
# One try with the password alone: after a wrong one, sudo reads the next
# line as another try, which must not be a "user:password" line. -k: a
# cached credential would leave the password line to chpasswd.
if ! printf '%s\n' "$pw" | sudo -k -S -p '' chpasswd; then
	pw=
	echo "postrotate: sudo -S chpasswd refused for $me with its password" >&2
	exit 1
fi
# sudo reads the first line, chpasswd the rest.
{ printf '%s\n' "$pw"; pw=; cat; } | sudo -k -S -p '' chpasswd
