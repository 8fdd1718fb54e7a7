//go:build unix

package winrm

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postrotate/postrotate/executor"
)

// This file is a fake WS-Management server: an httptest.Server that speaks
// the WinRM shell protocol ([MS-WSMV]) the way a Windows listener does, as
// far as the masterzen client and this package use it:
//
//   - Create (transfer/Create of the cmd resource URI) opens a shell and
//     answers ResourceCreated with its ShellId selector;
//   - Command starts the command line with /bin/sh -c, the way a Windows
//     listener runs it with cmd.exe /c, in its own process group, in a
//     "home" directory with TMPDIR set to a "temp" directory (a Windows
//     login's %TEMP%);
//   - Send decodes each base64 stdin chunk, writes it to the process and
//     closes its stdin at End="true";
//   - Receive holds until there is output or the command is done (at most
//     the request's OperationTimeout, then the w:TimedOut fault code
//     2150858793), and answers at most what fits the request's
//     MaxEnvelopeSize, base64 per stream, then the End streams and the
//     CommandState Done with the ExitCode;
//   - Signal terminate kills the process group, Delete kills every process
//     group of the shell and forgets it.
//
// Requests are parsed with encoding/xml; the Action header picks the
// operation, the ShellId selector and CommandId attributes the shell and
// command; an unknown shell is the fault a listener returns. A request
// larger than its own MaxEnvelopeSize is refused with the w:EncodingLimit
// fault: the strictest reading of the limit, so that a client sending
// oversized stdin envelopes fails here. Logins are checked with HTTP Basic,
// or with NTLMv2 inside HTTP Negotiate (see ntlmserver_test.go), whose
// authentication then holds for the rest of the TCP connection, as with
// HTTP.sys.
//
// What it does not do: run PowerShell or cmd.exe (the tests use
// Options.Shell = ShellPOSIX), encrypt messages, Kerberos, CredSSP, or the
// other WS-Management resources.

// Namespaces of the envelopes.
const (
	nsSOAP     = "http://www.w3.org/2003/05/soap-envelope"
	nsAddr     = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	nsWSMan    = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	nsShell    = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
	nsTransfer = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	nsFault    = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
)

// Actions.
const (
	actCreate   = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	actDelete   = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	actCommand  = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
	actSend     = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
	actReceive  = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
	actSignal   = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
	signalTerm  = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
	stateDone   = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
	stateActive = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
)

// fakePassword is the login password of the fake. It is a secret the
// executor masks; the conformance suite's capped-output check counts the
// bytes around the cut, so no form of it may match the text there (a
// random one sometimes did).
const fakePassword = "Adm1n-P@ss-Fake-WinRM"

// fakeBuffered is how much output of a stream the fake holds before it
// stops reading the process's pipe.
const fakeBuffered = 1 << 20

type soapEnvelope struct {
	XMLName xml.Name   `xml:"http://www.w3.org/2003/05/soap-envelope Envelope"`
	Header  soapHeader `xml:"http://www.w3.org/2003/05/soap-envelope Header"`
	Body    soapBody   `xml:"http://www.w3.org/2003/05/soap-envelope Body"`
}

type soapHeader struct {
	To               string `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing To"`
	Action           string `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing Action"`
	MessageID        string `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing MessageID"`
	MaxEnvelopeSize  int    `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd MaxEnvelopeSize"`
	OperationTimeout string `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd OperationTimeout"`
	ResourceURI      string `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd ResourceURI"`
	Selectors        []struct {
		Name  string `xml:"Name,attr"`
		Value string `xml:",chardata"`
	} `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd SelectorSet>Selector"`
	Options []struct {
		Name  string `xml:"Name,attr"`
		Value string `xml:",chardata"`
	} `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd OptionSet>Option"`
}

func (h soapHeader) selector(name string) string {
	for _, s := range h.Selectors {
		if s.Name == name {
			return s.Value
		}
	}
	return ""
}

type soapBody struct {
	Shell *struct {
		InputStreams  string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell InputStreams"`
		OutputStreams string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell OutputStreams"`
	} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Shell"`
	CommandLine *struct {
		Command   string   `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Command"`
		Arguments []string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Arguments"`
	} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell CommandLine"`
	Send *struct {
		Streams []struct {
			Name      string `xml:"Name,attr"`
			CommandID string `xml:"CommandId,attr"`
			End       string `xml:"End,attr"`
			Data      string `xml:",chardata"`
		} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Stream"`
	} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Send"`
	Receive *struct {
		DesiredStream struct {
			CommandID string `xml:"CommandId,attr"`
			Streams   string `xml:",chardata"`
		} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell DesiredStream"`
	} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Receive"`
	Signal *struct {
		CommandID string `xml:"CommandId,attr"`
		Code      string `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Code"`
	} `xml:"http://schemas.microsoft.com/wbem/wsman/1/windows/shell Signal"`
}

// fakeOptions configures a fake server. A zero field means its default.
type fakeOptions struct {
	// Auth is the login the server accepts. Defaults to AuthNTLM.
	Auth Auth
	// TLS serves HTTPS.
	TLS bool
	// MaxRequest bounds a request body, in bytes (a listener's
	// MaxEnvelopeSizekb). Defaults to 500 KiB.
	MaxRequest int
}

// fakeRequest records one request the server handled after login.
type fakeRequest struct {
	Action      string
	Size        int // body bytes
	MaxEnvelope int // the request's MaxEnvelopeSize header
	Body        string
	ShellID     string
	CommandID   string
	StdinBytes  int  // Send: decoded bytes
	End         bool // Send: End="true"
	SignalCode  string
	Options     map[string]string
}

// fakeServer is the fake WS-Management endpoint.
type fakeServer struct {
	t          *testing.T
	srv        *httptest.Server
	opts       fakeOptions
	login      string
	password   string
	ntlm       *ntlmServer
	home, temp string
	quit       chan struct{}
	procs      sync.WaitGroup // goroutines of the commands

	mu       sync.Mutex
	shells   map[string]*fakeShell
	requests []fakeRequest
	refused  int // requests refused a login
}

type fakeShell struct {
	id       string
	commands map[string]*fakeCommand
}

// fakeCommand is a command's process and its buffered output.
type fakeCommand struct {
	id, line string
	proc     *exec.Cmd
	stdin    io.WriteCloser
	outR     [2]*os.File

	sendMu      sync.Mutex
	stdinClosed bool

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	out      [2][]byte     // stdout, stderr not yet received
	eof      [2]bool
	done     bool // exited and output read to its end
	exitCode int
	discard  bool // the shell is gone: drop output
}

// notifyLocked wakes everyone waiting on c.changed. c.mu must be held.
func (c *fakeCommand) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type connKey struct{}

// connAuth is the login state of one TCP connection.
type connAuth struct{ authenticated atomic.Bool }

// newFakeServer starts a fake server with the login admin / a password of
// its own, closed at the end of the test.
func newFakeServer(t *testing.T, opts fakeOptions) *fakeServer {
	t.Helper()
	if opts.Auth == "" {
		opts.Auth = AuthNTLM
	}
	if opts.MaxRequest == 0 {
		opts.MaxRequest = 500 << 10
	}
	f := &fakeServer{
		t:        t,
		opts:     opts,
		login:    "admin",
		password: fakePassword,
		home:     t.TempDir(),
		temp:     t.TempDir(),
		quit:     make(chan struct{}),
		shells:   map[string]*fakeShell{},
	}
	f.ntlm = &ntlmServer{user: f.login, password: f.password, domain: "FAKEWIN"}
	f.srv = httptest.NewUnstartedServer(f)
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused TLS handshakes are expected
	f.srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, &connAuth{})
	}
	if opts.TLS {
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.close)
	return f
}

// target returns the executor target of the server.
func (f *fakeServer) target() *executor.Target {
	host, portStr, err := net.SplitHostPort(f.srv.Listener.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := strconv.Atoi(portStr)
	if err != nil {
		f.t.Fatal(err)
	}
	return &executor.Target{Host: host, Port: p, HTTPS: f.opts.TLS, Login: f.login, Password: f.password}
}

// close kills every process, stops the server and waits for the command
// goroutines.
func (f *fakeServer) close() {
	close(f.quit)
	f.mu.Lock()
	for _, sh := range f.shells {
		for _, c := range sh.commands {
			c.kill(syscall.SIGKILL)
			c.setDiscard()
		}
	}
	f.shells = map[string]*fakeShell{}
	f.mu.Unlock()
	f.srv.Close()
	f.procs.Wait()
}

// Requests returns the requests handled so far.
func (f *fakeServer) Requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.requests...)
}

// Refused returns how many requests were refused a login.
func (f *fakeServer) Refused() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

// OpenShells returns how many shells have not been deleted.
func (f *fakeServer) OpenShells() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.shells)
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/wsman" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(f.opts.MaxRequest)+1))
	if err != nil {
		return
	}
	if !f.authorize(w, r) {
		f.mu.Lock()
		f.refused++
		f.mu.Unlock()
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/soap+xml") {
		http.Error(w, "want application/soap+xml", http.StatusUnsupportedMediaType)
		return
	}
	var env soapEnvelope
	if err := xml.Unmarshal(body, &env); err != nil {
		f.fault(w, http.StatusBadRequest, "InvalidMessageInformationHeader", "2150858817", "The WS-Management service cannot process the request because the XML is invalid: "+err.Error())
		return
	}
	rec := recordRequest(env, body)
	f.mu.Lock()
	f.requests = append(f.requests, rec)
	f.mu.Unlock()

	if len(body) > f.opts.MaxRequest || (env.Header.MaxEnvelopeSize > 0 && len(body) > env.Header.MaxEnvelopeSize) {
		f.fault(w, http.StatusBadRequest, "EncodingLimit", "2150858817",
			fmt.Sprintf("The WS-Management service cannot process the request because the envelope of %d bytes exceeds the maximum envelope size.", len(body)))
		return
	}
	if env.Header.ResourceURI != resourceURIShell {
		f.fault(w, http.StatusBadRequest, "DestinationUnreachable", "2150858770", "The WS-Management service cannot process the request because the resource URI is not supported.")
		return
	}
	f.dispatch(w, r, env, rec.ShellID)
}

// recordRequest returns the record of a request of body, parsed as env.
func recordRequest(env soapEnvelope, body []byte) fakeRequest {
	rec := fakeRequest{
		Action: env.Header.Action, Size: len(body), MaxEnvelope: env.Header.MaxEnvelopeSize,
		Body: string(body), ShellID: env.Header.selector("ShellId"), Options: map[string]string{},
	}
	for _, o := range env.Header.Options {
		rec.Options[o.Name] = o.Value
	}
	if env.Body.Send != nil {
		for _, s := range env.Body.Send.Streams {
			rec.CommandID = s.CommandID
			rec.End = rec.End || s.End == "true"
			if d, err := base64.StdEncoding.DecodeString(s.Data); err == nil {
				rec.StdinBytes += len(d)
			}
		}
	}
	if env.Body.Signal != nil {
		rec.CommandID, rec.SignalCode = env.Body.Signal.CommandID, env.Body.Signal.Code
	}
	return rec
}

// dispatch performs the action of a request on the shell shellID.
func (f *fakeServer) dispatch(w http.ResponseWriter, r *http.Request, env soapEnvelope, shellID string) {
	if env.Header.Action == actCreate {
		f.create(w, env)
		return
	}
	f.mu.Lock()
	sh := f.shells[shellID]
	f.mu.Unlock()
	if sh == nil {
		f.fault(w, http.StatusBadRequest, "InvalidSelectors", "2150858843",
			fmt.Sprintf("The request for the Windows Remote Shell with ShellId %s failed because the shell was not found on the server.", shellID))
		return
	}
	switch env.Header.Action {
	case actCommand:
		f.command(w, env, sh)
	case actSend:
		f.send(w, env, sh)
	case actReceive:
		f.receive(w, r, env, sh)
	case actSignal:
		f.signal(w, env, sh)
	case actDelete:
		f.delete(w, sh)
	default:
		f.fault(w, http.StatusBadRequest, "ActionNotSupported", "2150858772", "The action is not supported by the service: "+env.Header.Action)
	}
}

// reply writes a response envelope.
func (f *fakeServer) reply(w http.ResponseWriter, status int, action, body string) {
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?>`+
		`<s:Envelope xml:lang="en-US" xmlns:s=%q xmlns:a=%q xmlns:x=%q xmlns:w=%q xmlns:rsp=%q>`+
		`<s:Header><a:Action>%s</a:Action><a:MessageID>%s</a:MessageID>`+
		`<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To></s:Header>`+
		`<s:Body>%s</s:Body></s:Envelope>`,
		nsSOAP, nsAddr, nsTransfer, nsWSMan, nsShell, action, newMessageID(), body)
}

// fault writes a WS-Management fault.
func (f *fakeServer) fault(w http.ResponseWriter, status int, subcode, code, reason string) {
	var esc strings.Builder
	_ = xml.EscapeText(&esc, []byte(reason))
	f.reply(w, status, "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
		`<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:`+subcode+`</s:Value></s:Subcode></s:Code>`+
			`<s:Reason><s:Text xml:lang="en-US">`+esc.String()+`</s:Text></s:Reason>`+
			`<s:Detail><f:WSManFault xmlns:f="`+nsFault+`" Code="`+code+`" Machine="fakewin"><f:Message>`+esc.String()+`</f:Message></f:WSManFault></s:Detail></s:Fault>`)
}

func (f *fakeServer) create(w http.ResponseWriter, env soapEnvelope) {
	if env.Body.Shell == nil || env.Body.Shell.InputStreams != "stdin" || env.Body.Shell.OutputStreams != "stdout stderr" {
		f.fault(w, http.StatusBadRequest, "SchemaValidationError", "2150858817", "The shell must have the streams stdin and stdout stderr.")
		return
	}
	sh := &fakeShell{id: strings.ToUpper(strings.TrimPrefix(newMessageID(), "uuid:")), commands: map[string]*fakeCommand{}}
	f.mu.Lock()
	f.shells[sh.id] = sh
	f.mu.Unlock()
	f.reply(w, http.StatusOK, "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
		`<x:ResourceCreated><a:Address>`+f.srv.URL+`/wsman</a:Address><a:ReferenceParameters>`+
			`<w:ResourceURI>`+resourceURIShell+`</w:ResourceURI>`+
			`<w:SelectorSet><w:Selector Name="ShellId">`+sh.id+`</w:Selector></w:SelectorSet>`+
			`</a:ReferenceParameters></x:ResourceCreated>`+
			`<rsp:Shell><rsp:ShellId>`+sh.id+`</rsp:ShellId><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>`)
}

func (f *fakeServer) command(w http.ResponseWriter, env soapEnvelope, sh *fakeShell) {
	if env.Body.CommandLine == nil || strings.TrimSpace(env.Body.CommandLine.Command) == "" {
		f.fault(w, http.StatusBadRequest, "SchemaValidationError", "2150858817", "The command line is empty.")
		return
	}
	line := env.Body.CommandLine.Command
	for _, a := range env.Body.CommandLine.Arguments {
		line += " " + a
	}
	c, err := f.start(line)
	if err != nil {
		f.fault(w, http.StatusInternalServerError, "InternalError", "2147942402", "start: "+err.Error())
		return
	}
	f.mu.Lock()
	sh.commands[c.id] = c
	f.mu.Unlock()
	f.reply(w, http.StatusOK, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
		`<rsp:CommandResponse><rsp:CommandId>`+c.id+`</rsp:CommandId></rsp:CommandResponse>`)
}

// start runs a command line the way cmd.exe /c would: here /bin/sh -c.
func (f *fakeServer) start(line string) (*fakeCommand, error) {
	proc := exec.Command("/bin/sh", "-c", line)
	proc.Dir = f.home
	proc.Env = append(os.Environ(), "TMPDIR="+f.temp)
	proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := proc.StdinPipe()
	if err != nil {
		return nil, err
	}
	c := &fakeCommand{id: strings.ToUpper(strings.TrimPrefix(newMessageID(), "uuid:")), line: line, proc: proc, stdin: stdin, changed: make(chan struct{})}
	var outW [2]*os.File
	for i := range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		c.outR[i], outW[i] = r, w
	}
	proc.Stdout, proc.Stderr = outW[0], outW[1]
	err = proc.Start()
	outW[0].Close()
	outW[1].Close()
	if err != nil {
		c.outR[0].Close()
		c.outR[1].Close()
		return nil, err
	}
	f.procs.Add(3)
	go func() { defer f.procs.Done(); c.pump(0, f.quit) }()
	go func() { defer f.procs.Done(); c.pump(1, f.quit) }()
	go func() { defer f.procs.Done(); c.wait() }()
	return c, nil
}

// pump reads stream i of the process into c.out[i], holding at most
// fakeBuffered bytes of it.
func (c *fakeCommand) pump(i int, quit <-chan struct{}) {
	defer c.outR[i].Close()
	buf := make([]byte, 64<<10)
	for {
		c.mu.Lock()
		for len(c.out[i]) >= fakeBuffered && !c.discard {
			ch := c.changed
			c.mu.Unlock()
			select {
			case <-ch:
			case <-quit:
				c.setDiscard()
			}
			c.mu.Lock()
		}
		c.mu.Unlock()
		n, err := c.outR[i].Read(buf)
		c.mu.Lock()
		if !c.discard {
			c.out[i] = append(c.out[i], buf[:n]...)
		}
		if err != nil {
			c.eof[i] = true
		}
		c.notifyLocked()
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// wait waits for the process, then for its output to end: at most a second
// more, since a process it left in the background may hold the pipes.
func (c *fakeCommand) wait() {
	err := c.proc.Wait()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = exitErr.ExitCode()
		}
	case err != nil:
		code = 1
	}
	deadline := time.NewTimer(time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if c.eof[0] && c.eof[1] {
			c.done, c.exitCode = true, code
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			c.outR[0].Close() // the pumps end
			c.outR[1].Close()
		}
	}
}

func (c *fakeCommand) kill(sig syscall.Signal) {
	if c.proc.Process != nil {
		_ = syscall.Kill(-c.proc.Process.Pid, sig)
	}
}

func (c *fakeCommand) setDiscard() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.discard = true
	c.out = [2][]byte{}
	c.notifyLocked()
}

func (f *fakeServer) lookup(sh *fakeShell, id string) *fakeCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sh.commands[id]
}

func (f *fakeServer) send(w http.ResponseWriter, env soapEnvelope, sh *fakeShell) {
	if env.Body.Send == nil || len(env.Body.Send.Streams) == 0 {
		f.fault(w, http.StatusBadRequest, "SchemaValidationError", "2150858817", "Send without a stream.")
		return
	}
	for _, s := range env.Body.Send.Streams {
		c := f.lookup(sh, s.CommandID)
		if c == nil || s.Name != "stdin" {
			f.fault(w, http.StatusBadRequest, "InvalidParameter", "2150858843", "unknown command or stream")
			return
		}
		data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s.Data))
		if err != nil {
			f.fault(w, http.StatusBadRequest, "SchemaValidationError", "2150858817", "stdin is not base64: "+err.Error())
			return
		}
		c.sendMu.Lock()
		if c.stdinClosed {
			c.sendMu.Unlock()
			f.fault(w, http.StatusBadRequest, "InvalidParameter", "2150858843", "The stdin of the command was closed.")
			return
		}
		if len(data) > 0 {
			_, err = c.stdin.Write(data)
		}
		if s.End == "true" || err != nil {
			c.stdinClosed = true
			_ = c.stdin.Close()
		}
		c.sendMu.Unlock()
		if err != nil {
			f.fault(w, http.StatusInternalServerError, "InternalError", "2147942509", "The pipe is being closed.")
			return
		}
	}
	f.reply(w, http.StatusOK, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse", `<rsp:SendResponse/>`)
}

func (f *fakeServer) receive(w http.ResponseWriter, r *http.Request, env soapEnvelope, sh *fakeShell) {
	if env.Body.Receive == nil {
		f.fault(w, http.StatusBadRequest, "SchemaValidationError", "2150858817", "Receive without DesiredStream.")
		return
	}
	c := f.lookup(sh, env.Body.Receive.DesiredStream.CommandID)
	if c == nil {
		f.fault(w, http.StatusBadRequest, "InvalidParameter", "2150858843", "unknown command")
		return
	}
	envelope := env.Header.MaxEnvelopeSize
	if envelope <= 0 {
		envelope = 153600
	}
	budget := (envelope - 4096) / 4 * 3
	timer := time.NewTimer(isoDuration(env.Header.OperationTimeout))
	defer timer.Stop()
	c.mu.Lock()
	for len(c.out[0])+len(c.out[1]) == 0 && !c.done {
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			f.fault(w, http.StatusInternalServerError, "TimedOut", "2150858793",
				"The WS-Management service cannot complete the operation within the time specified in OperationTimeout.")
			return
		case <-r.Context().Done():
			return
		case <-f.quit:
			return
		}
		c.mu.Lock()
	}
	half := budget / 2
	n0 := min(len(c.out[0]), max(half, budget-min(len(c.out[1]), half)))
	n1 := min(len(c.out[1]), budget-n0)
	var body strings.Builder
	body.WriteString(`<rsp:ReceiveResponse>`)
	for i, n := range []int{n0, n1} {
		if n > 0 {
			fmt.Fprintf(&body, `<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>`,
				[]string{"stdout", "stderr"}[i], c.id, base64.StdEncoding.EncodeToString(c.out[i][:n]))
			c.out[i] = c.out[i][n:]
		}
	}
	done := c.done && len(c.out[0])+len(c.out[1]) == 0
	code := c.exitCode
	c.notifyLocked()
	c.mu.Unlock()
	if done {
		fmt.Fprintf(&body, `<rsp:Stream Name="stdout" CommandId="%[1]s" End="true"></rsp:Stream>`+
			`<rsp:Stream Name="stderr" CommandId="%[1]s" End="true"></rsp:Stream>`+
			`<rsp:CommandState CommandId="%[1]s" State="%[2]s"><rsp:ExitCode>%[3]d</rsp:ExitCode></rsp:CommandState>`,
			c.id, stateDone, code)
	} else {
		fmt.Fprintf(&body, `<rsp:CommandState CommandId="%s" State="%s"/>`, c.id, stateActive)
	}
	body.WriteString(`</rsp:ReceiveResponse>`)
	f.reply(w, http.StatusOK, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse", body.String())
}

func (f *fakeServer) signal(w http.ResponseWriter, env soapEnvelope, sh *fakeShell) {
	if env.Body.Signal == nil {
		f.fault(w, http.StatusBadRequest, "SchemaValidationError", "2150858817", "Signal without a code.")
		return
	}
	c := f.lookup(sh, env.Body.Signal.CommandID)
	if c == nil {
		f.fault(w, http.StatusBadRequest, "InvalidParameter", "2150858843", "unknown command")
		return
	}
	switch env.Body.Signal.Code {
	case signalTerm:
		c.kill(syscall.SIGKILL) // TerminateProcess: no grace
	case "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c":
		c.kill(syscall.SIGINT)
	default:
		f.fault(w, http.StatusBadRequest, "InvalidParameter", "2150858843", "unknown signal code")
		return
	}
	f.reply(w, http.StatusOK, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse", `<rsp:SignalResponse/>`)
}

func (f *fakeServer) delete(w http.ResponseWriter, sh *fakeShell) {
	f.mu.Lock()
	delete(f.shells, sh.id)
	commands := sh.commands
	f.mu.Unlock()
	for _, c := range commands {
		c.kill(syscall.SIGKILL)
	}
	f.reply(w, http.StatusOK, "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", "")
}

// isoDuration parses the xs:duration of an OperationTimeout (PTnS,
// PTn.nnnS); anything else means 60s.
func isoDuration(s string) time.Duration {
	if v, ok := strings.CutPrefix(s, "PT"); ok {
		if v, ok := strings.CutSuffix(v, "S"); ok {
			if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
				return time.Duration(secs * float64(time.Second))
			}
		}
	}
	return 60 * time.Second
}

// authorize checks the request's login; it writes the 401 itself.
func (f *fakeServer) authorize(w http.ResponseWriter, r *http.Request) bool {
	if f.opts.Auth == AuthBasic {
		if u, p, ok := r.BasicAuth(); ok && u == f.login && p == f.password {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="WSMAN"`)
		w.WriteHeader(http.StatusUnauthorized)
		return false
	}
	state, _ := r.Context().Value(connKey{}).(*connAuth)
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme == "" && state != nil && state.authenticated.Load() {
		return true // the connection is authenticated
	}
	if strings.EqualFold(scheme, "Negotiate") || strings.EqualFold(scheme, "NTLM") {
		msg, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
		if err == nil {
			switch ntlmMessageType(msg) {
			case 1:
				w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(f.ntlm.challenge()))
				w.WriteHeader(http.StatusUnauthorized)
				return false
			case 3:
				if f.ntlm.verify(msg) {
					if state != nil {
						state.authenticated.Store(true)
					}
					return true
				}
			}
		}
	}
	w.Header().Set("WWW-Authenticate", "Negotiate")
	w.WriteHeader(http.StatusUnauthorized)
	return false
}
