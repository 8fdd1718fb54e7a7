package rotate

import (
	"fmt"
	"regexp"
	"strings"
)

// userName is a POSIX portable user name: letters, digits, '.', '_' and
// '-', not starting with '-'.
var userName = regexp.MustCompile(`^[A-Za-z0-9._][A-Za-z0-9._-]*$`)

// maxUserName is Linux's LOGIN_NAME_MAX less its NUL.
const maxUserName = 255

// maxRoleName is PostgreSQL's NAMEDATALEN less its NUL: the server would
// truncate a longer name, and change another role's password.
const maxRoleName = 63

// checkUserName checks a Linux login for chpasswd's "user:password" lines.
func checkUserName(path, login string) error {
	switch {
	case login == "":
		return fmt.Errorf("%s: empty: %w", path, ErrInvalidLogin)
	case len(login) > maxUserName:
		return fmt.Errorf("%s: longer than %d bytes: %w", path, maxUserName, ErrInvalidLogin)
	case login == "." || login == ".." || !userName.MatchString(login):
		return fmt.Errorf("%s: %q is not a POSIX user name (letters, digits, '.', '_', '-', not starting with '-'): %w", path, login, ErrInvalidLogin)
	}
	return nil
}

// checkRoleName checks a PostgreSQL role name.
func checkRoleName(path, role string) error {
	switch {
	case role == "":
		return fmt.Errorf("%s: empty: %w", path, ErrInvalidLogin)
	case len(role) > maxRoleName:
		return fmt.Errorf("%s: longer than %d bytes, PostgreSQL's limit: %w", path, maxRoleName, ErrInvalidLogin)
	case strings.ContainsRune(role, 0):
		return fmt.Errorf("%s: %q holds a NUL: %w", path, role, ErrInvalidLogin)
	}
	return nil
}

// checkLine checks a password that travels as one line of a script's
// stdin. The error never holds the password.
func checkLine(path, password, reader string) error {
	switch {
	case strings.ContainsAny(password, "\n\r"):
		return fmt.Errorf("%s: holds a line break, which %s cannot take: %w", path, reader, ErrInvalidPassword)
	case strings.ContainsRune(password, 0):
		return fmt.Errorf("%s: holds a NUL, which %s cannot take: %w", path, reader, ErrInvalidPassword)
	}
	return nil
}
