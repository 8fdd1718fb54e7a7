package broker

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// With an encryption key, nothing written through JetStream appears in the
// store's files, and the store reopens with the same key.
func TestEncryptedStore(t *testing.T) {
	t.Parallel()
	const marker = "Marker-Store-Secret-58ad"
	dir := t.TempDir()
	open := func() (jetstream.KeyValue, func()) {
		b, err := Start(Options{StoreDir: dir, EncryptionKey: "a-key-derived-elsewhere"})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := b.Connect()
		if err != nil {
			b.Shutdown()
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		kv, err := js.CreateOrUpdateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "T"})
		if err != nil {
			t.Fatal(err)
		}
		return kv, func() { nc.Close(); b.Shutdown() }
	}
	kv, closeFn := open()
	if _, err := kv.Put(t.Context(), "k", []byte(marker)); err != nil {
		t.Fatal(err)
	}
	closeFn()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		for _, form := range []string{marker, base64.StdEncoding.EncodeToString([]byte(marker))} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("%s holds the secret in plaintext", p)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	kv, closeFn = open()
	defer closeFn()
	e, err := kv.Get(t.Context(), "k")
	if err != nil || string(e.Value()) != marker {
		t.Fatalf("after reopening: %v %q", err, e)
	}
}
