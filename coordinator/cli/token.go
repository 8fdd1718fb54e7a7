package cli

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// apiTokenEnv holds the HTTP API token when no --api-token-file is given.
const apiTokenEnv = "POSTROTATE_API_TOKEN"

// maxTokenFileSize bounds what readToken reads.
const maxTokenFileSize = 4 << 10

// clientToken returns the API token a client sends: the content of file,
// else $POSTROTATE_API_TOKEN, else "" (no token).
func clientToken(file string) (string, error) {
	if file != "" {
		return readToken(file)
	}
	return envToken()
}

// serveToken returns the API token serve requires: the content of file —
// created with a random token when it does not exist (created reports it)
// — else $POSTROTATE_API_TOKEN, else "" (none required).
func serveToken(file string) (token string, created bool, err error) {
	if file == "" {
		token, err := envToken()
		return token, false, err
	}
	token, err = readToken(file)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	token, err = createToken(file)
	if errors.Is(err, fs.ErrExist) {
		token, err = readToken(file) // created by another process meanwhile
		return token, false, err
	}
	return token, err == nil, err
}

func envToken() (string, error) {
	v, ok := os.LookupEnv(apiTokenEnv)
	if !ok {
		return "", nil
	}
	token := strings.TrimSpace(v)
	if err := checkToken(token); err != nil {
		return "", fmt.Errorf("$%s: %w", apiTokenEnv, err)
	}
	return token, nil
}

// checkToken refuses a token that cannot travel in an Authorization
// header. Its errors never contain the token.
func checkToken(token string) error {
	if token == "" {
		return errors.New("the API token is empty")
	}
	for _, c := range token {
		if c <= ' ' || c > '~' {
			return errors.New("the API token has a space or a character outside printable ASCII")
		}
	}
	return nil
}

// readToken reads a token file. Outside Windows, a file that its group or
// others may access is refused, as the vault key file is.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("API token file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("API token file: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return "", fmt.Errorf("API token file %s: permissions %04o are too open: it must be accessible by its owner only (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileSize+1))
	if err != nil {
		return "", fmt.Errorf("API token file: %w", err)
	}
	if len(data) > maxTokenFileSize {
		return "", fmt.Errorf("API token file %s: too large", path)
	}
	token := strings.TrimSpace(string(data))
	if err := checkToken(token); err != nil {
		return "", fmt.Errorf("API token file %s: %w", path, err)
	}
	return token, nil
}

// createToken writes a new random token (256 bits, base32) to path,
// which must not exist, with mode 0600.
func createToken(path string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create API token file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create API token file: %w", err)
	}
	token := rand.Text() + rand.Text()
	_, werr := f.WriteString(token + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("create API token file: %w", werr)
	}
	return token, nil
}
