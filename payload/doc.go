// Package payload builds and reads what a post-rotation script receives on
// stdin, byte for byte as Keeper's gateway sends it, so that scripts written
// for Keeper run unchanged under postrotate. See Keeper's description of the
// inputs at
// https://docs.keeper.io/en/keeperpam/privileged-access-manager/password-rotation/post-rotation-scripts/parameters
//
// It imports only the standard library.
//
// # Framing
//
// A script reads exactly one line, then EOF:
//
//	base64(JSON object) "\n"
//
// The base64 is standard (RFC 4648 §4, alphabet A–Z a–z 0–9 + /), '='
// padded and never wrapped, so all three ways scripts read it work: a shell
// `IFS= read -r line`, `cat | base64 -d`, and Python's
// `for line in sys.stdin: ... break`. The JSON is UTF-8, compact, and not
// HTML-escaped. [Params.Encode] writes these bytes; [Decode] reads them back
// and refuses anything else.
//
// # Parameters
//
// The object has seven string keys, in this order (see [Params]):
//
//	providerRecordUid  uid of the PAM Configuration ("" when there is none)
//	resourceRecordUid  uid of the PAM Machine, Database or Directory ("" when there is none)
//	userRecordUid      uid of the PAM User
//	newPassword        the password just set
//	oldPassword        the password it replaced
//	user               the login of the PAM User
//	records            standard base64 of a JSON array of record dictionaries
//
// [Build] makes them from an [Input].
//
// # Records
//
// The records array holds one dictionary per record, in this order: the PAM
// Configuration, the resource, the additional credential records attached
// with the script, and the PAM User. A dictionary ([Record.Dict]) has "uid"
// and "title", then one key per field in field order: the field's label, or
// its type when it has no label. A field with one value gives that value (a
// host field gives {"hostName": ..., "port": ...}); several values give an
// array; no value gives null. A key already present gets "_2", "_3", ...
// appended, the first that is free. Script attachments are not fields and
// never appear. [Dict] keeps key order both ways, as a Python dict does.
//
// # Secrets
//
// [Input.Secrets] lists the passwords and the values of every secret field
// ([Record.Secrets]); [Params.Secrets] adds the encoded forms that contain
// them as a whole. [SecretVariants] expands secrets into every form a script
// might print them in (base64, JSON-, URL- and HTML-escaped, hex, upper- and
// lower-cased), longest first, for
// masking output. No error from this package contains a secret: errors name
// a record, a field, a key or a byte offset, never a value; they wrap
// [ErrInvalidInput] (from [Build]) or [ErrMalformed] (from decoding).
package payload
