package winrm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	winrmclient "github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/postrotate/postrotate/executor"
)

// WS-Management addresses of the shell protocol ([MS-WSMV]).
const (
	resourceURIShell = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
	actionCommand    = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
	replyToAnonymous = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
)

// errStopped ends a request loop whose run is over.
var errStopped = errors.New("stopped")

// errClientClosed is returned by a request made after the client was closed.
var errClientClosed = errors.New("client closed")

// client is one run's view of a target: the masterzen client holding the
// endpoint and credentials, its transport (NTLM or Basic), and every TCP
// connection it dialled, closed together at the end of the run so that no
// request, and no goroutine of the HTTP transport, outlives it.
type client struct {
	mz     *winrmclient.Client
	tr     winrmclient.Transporter
	params *winrmclient.Parameters
	url    string
	conns  *connTracker
}

// newClient configures a client for t. It does not connect.
func (w *WinRM) newClient(t *executor.Target) (*client, error) {
	host := t.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]" // the endpoint URL is built as host:port
	}
	var caCert []byte
	if t.CACert != "" {
		caCert = []byte(t.CACert)
	}
	endpoint := winrmclient.NewEndpoint(host, port(t), t.HTTPS, t.InsecureIgnoreHostKey, caCert, nil, nil, w.opts.RequestTimeout)
	conns := &connTracker{dial: w.opts.Dial, timeout: w.opts.DialTimeout}
	var tr winrmclient.Transporter
	if w.opts.Auth == AuthBasic {
		tr = winrmclient.NewClientWithDial(conns.Dial)
	} else {
		tr = winrmclient.NewClientNTLMWithDial(conns.Dial)
	}
	params := winrmclient.NewParameters(isoSeconds(w.opts.OperationTimeout), "en-US", w.opts.EnvelopeSize)
	params.TransportDecorator = func() winrmclient.Transporter { return tr }
	mz, err := winrmclient.NewClientWithParameters(endpoint, t.Login, t.Password, params)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if t.HTTPS {
		scheme = "https"
	}
	return &client{
		mz:     mz,
		tr:     tr,
		params: params,
		url:    fmt.Sprintf("%s://%s:%d/wsman", scheme, host, port(t)),
		conns:  conns,
	}, nil
}

// isoSeconds formats d as an xs:duration in whole seconds, at least one.
func isoSeconds(d time.Duration) string {
	return "PT" + strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))) + "S"
}

// close closes every connection: requests in flight fail, new ones are
// refused. Safe to call twice.
func (c *client) close() { c.conns.closeAll() }

// post sends one request and returns the response envelope. A SOAP fault
// becomes a *faultError, a refused login wraps ErrUnauthorized.
func (c *client) post(m *soap.SoapMessage) (string, error) {
	resp, err := c.tr.Post(c.mz, m)
	if err != nil {
		return "", classify(err)
	}
	return resp, nil
}

// inputChunk is the most stdin bytes one Send carries: their base64 and
// the envelope around them stay within EnvelopeSize.
func (c *client) inputChunk() int {
	const overhead = 4 << 10 // headers, addresses and selectors take about 1.5 KiB
	return (c.params.EnvelopeSize - overhead) / 4 * 3
}

// createShell opens a cmd shell and returns its id.
func (c *client) createShell() (string, error) {
	resp, err := c.post(winrmclient.NewOpenShellRequest(c.url, c.params))
	if err != nil {
		return "", err
	}
	id, err := winrmclient.ParseOpenShellResponse(resp)
	if err != nil {
		return "", fmt.Errorf("parse create response: %w", err)
	}
	if id == "" {
		return "", errors.New("create response holds no shell id")
	}
	return id, nil
}

// deleteShell deletes a shell; the server ends every process it started.
func (c *client) deleteShell(shellID string) error {
	_, err := c.post(winrmclient.NewDeleteShellRequest(c.url, shellID, c.params))
	return err
}

// command starts a command line in a shell and returns the command's id.
//
// It builds the request itself rather than with the masterzen client's
// Shell.Execute, which sets WINRS_CONSOLEMODE_STDIN to TRUE: the process
// would then read a console, not a pipe, and PowerShell's -Command - needs
// redirected stdin. WINRS_SKIP_CMD_SHELL stays FALSE: cmd.exe /c runs the
// line, as winrs does.
func (c *client) command(shellID, line string) (string, error) {
	m := soap.NewMessage()
	m.Header().
		To(c.url).
		ReplyTo(replyToAnonymous).
		MaxEnvelopeSize(c.params.EnvelopeSize).
		Id(newMessageID()).
		Locale(c.params.Locale).
		Timeout(c.params.Timeout).
		Action(actionCommand).
		ResourceURI(resourceURIShell).
		ShellId(shellID).
		AddOption(soap.NewHeaderOption("WINRS_CONSOLEMODE_STDIN", "FALSE")).
		AddOption(soap.NewHeaderOption("WINRS_SKIP_CMD_SHELL", "FALSE")).
		Build()
	body := m.CreateBodyElement("CommandLine", soap.DOM_NS_WIN_SHELL)
	// The library writes content verbatim; CDATA keeps & and < intact.
	m.CreateElement(body, "Command", soap.DOM_NS_WIN_SHELL).SetContent("<![CDATA[" + line + "]]>")
	resp, err := c.post(m)
	if err != nil {
		return "", err
	}
	id, err := winrmclient.ParseExecuteCommandResponse(resp)
	if err != nil {
		return "", fmt.Errorf("parse command response: %w", err)
	}
	if id == "" {
		return "", errors.New("command response holds no command id")
	}
	return id, nil
}

// exec runs a short command in a shell of its own, feeding it stdin, and
// waits for it to end, until deadline at most. Its output is discarded.
func (c *client) exec(line string, stdin []byte, deadline time.Time) error {
	shellID, err := c.createShell()
	if err != nil {
		return err
	}
	defer func() { _ = c.deleteShell(shellID) }()
	id, err := c.command(shellID, line)
	if err != nil {
		return err
	}
	cmd := &command{c: c, shellID: shellID, id: id, finished: make(chan struct{})}
	if err := cmd.send(stdin, c.inputChunk(), nil); err != nil {
		return fmt.Errorf("send stdin: %w", err)
	}
	stop := make(chan struct{})
	t := time.AfterFunc(time.Until(deadline), func() { close(stop) })
	defer t.Stop()
	cmd.receive(io.Discard, io.Discard, stop)
	if !cmd.done() {
		return cmd.err
	}
	if cmd.exitCode != 0 {
		return fmt.Errorf("exit status %d", cmd.exitCode)
	}
	return nil
}

// command is one remote command. Its output is fetched by receive, its
// stdin sent by send, each from a goroutine of its own.
type command struct {
	c        *client
	shellID  string
	id       string
	finished chan struct{} // closed when receive returns
	// Set by receive before finished is closed.
	completed bool  // the server said the command is done
	exitCode  int   // its exit code, when completed
	err       error // why receive ended otherwise
}

// done reports whether the command completed. Call it after finished is
// closed.
func (cmd *command) done() bool { return cmd.completed }

// receive fetches the command's output into stdout and stderr until the
// server says the command is done, a request fails, or stop is closed
// (checked between requests). It closes cmd.finished when it returns.
func (cmd *command) receive(stdout, stderr io.Writer, stop <-chan struct{}) {
	defer close(cmd.finished)
	for {
		resp, err := cmd.c.post(winrmclient.NewGetOutputRequest(cmd.c.url, cmd.shellID, cmd.id, "stdout stderr", cmd.c.params))
		switch {
		case err == nil:
		case isOperationTimeout(err):
			// No output within OperationTimeout: ask again.
		default:
			cmd.err = fmt.Errorf("receive output: %w", err)
			return
		}
		if err == nil {
			done, code, err := winrmclient.ParseSlurpOutputErrResponse(resp, stdout, stderr)
			if err != nil {
				cmd.err = fmt.Errorf("parse receive response: %w", err)
				return
			}
			if done {
				cmd.completed, cmd.exitCode = true, code
				return
			}
		}
		select {
		case <-stop:
			cmd.err = errStopped
			return
		default:
		}
	}
}

// send sends data to the command's stdin, then EOF, in chunks of at most
// chunk bytes: one Send request each, the last one marked End. It stops
// early when stop is closed (which may be nil).
func (cmd *command) send(data []byte, chunk int, stop <-chan struct{}) error {
	for {
		n := min(chunk, len(data))
		end := n == len(data)
		if _, err := cmd.c.post(winrmclient.NewSendInputRequest(cmd.c.url, cmd.shellID, cmd.id, data[:n], end, cmd.c.params)); err != nil {
			return err
		}
		if end {
			return nil
		}
		data = data[n:]
		select {
		case <-stop:
			return errStopped
		default:
		}
	}
}

// signal asks the server to terminate the command.
func (cmd *command) signal() error {
	_, err := cmd.c.post(winrmclient.NewSignalRequest(cmd.c.url, cmd.shellID, cmd.id, cmd.c.params))
	return err
}

// newMessageID returns a random WS-Addressing message id.
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	h := hex.EncodeToString(b[:])
	return "uuid:" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// connTracker dials connections for one client and closes them all at once.
type connTracker struct {
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	timeout time.Duration

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

// Dial has the signature the masterzen transports take.
func (t *connTracker) Dial(network, address string) (net.Conn, error) {
	if t.isClosed() {
		return nil, errClientClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	conn, err := t.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = conn.Close()
		return nil, errClientClosed
	}
	t.conns = append(t.conns, conn)
	return conn, nil
}

func (t *connTracker) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// closeAll closes every connection and refuses new ones.
func (t *connTracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, c := range t.conns {
		_ = c.Close()
	}
	t.conns = nil
}

// faultError is a WS-Management fault returned by the server.
type faultError struct {
	Status int    // HTTP status
	Code   string // WSManFault code, e.g. 2150858793
	Reason string
}

func (e *faultError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wsman fault (HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(", code " + e.Code)
	}
	b.WriteString(")")
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

// classify turns the masterzen transport's errors into typed ones: a 401 is
// ErrUnauthorized, a fault body a *faultError. The transport reports a
// non-200 status only in its error text ("http error 500: <body>",
// "http response error: 401 - invalid content type"), so that is parsed.
func classify(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "http response error: 401 ") || strings.HasPrefix(msg, "http error 401:") {
		return fmt.Errorf("%w (HTTP 401)", ErrUnauthorized)
	}
	rest, ok := strings.CutPrefix(msg, "http error ")
	if !ok {
		return err
	}
	status, body, ok := strings.Cut(rest, ": ")
	code, convErr := strconv.Atoi(status)
	if !ok || convErr != nil {
		return err
	}
	fe := &faultError{Status: code}
	parseFault(body, fe)
	if fe.Reason == "" && fe.Code == "" {
		return err
	}
	return fe
}

// parseFault fills fe from a SOAP fault envelope.
func parseFault(body string, fe *faultError) {
	var f struct {
		Body struct {
			Fault struct {
				Subcode string `xml:"Code>Subcode>Value"`
				Reason  string `xml:"Reason>Text"`
				Detail  struct {
					WSManFault struct {
						Code    string `xml:"Code,attr"`
						Message string `xml:"Message"`
					} `xml:"WSManFault"`
				} `xml:"Detail"`
			} `xml:"Fault"`
		} `xml:"Body"`
	}
	if xml.NewDecoder(bytes.NewReader([]byte(body))).Decode(&f) != nil {
		return
	}
	fault := f.Body.Fault
	fe.Code = fault.Detail.WSManFault.Code
	fe.Reason = strings.TrimSpace(cmpOr(fault.Detail.WSManFault.Message, fault.Reason))
	if fe.Reason == "" {
		fe.Reason = fault.Subcode
	}
}

func cmpOr(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}

// isOperationTimeout reports whether err is the fault a server returns for
// a Receive that saw no output within OperationTimeout.
func isOperationTimeout(err error) bool {
	var fe *faultError
	if !errors.As(err, &fe) {
		return false
	}
	return fe.Code == "2150858793" || strings.Contains(fe.Reason, "OperationTimeout") || strings.HasSuffix(fe.Reason, "TimedOut")
}
