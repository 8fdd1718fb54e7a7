package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// exitInfo is how a remote command ended, as its session reported it.
type exitInfo struct {
	status  int    // exit status; -1 when none was reported
	signal  string // name of the signal that ended it, without "SIG"; "" if none
	message string // the server's message with exit-signal
}

// session is one remote command on its own session channel. It is driven
// through the raw channel rather than gossh.Session so that the exit status
// is known as soon as it arrives, even while a background process of the
// script still holds its output open.
type session struct {
	ch        gossh.Channel
	exited    chan struct{} // closed once exit-status or exit-signal arrived, or the channel closed
	closed    chan struct{} // closed when the channel is closed on both sides (or the connection is gone)
	outDone   chan struct{} // closed when stdout and stderr reached EOF
	exitOnce  sync.Once
	mu        sync.Mutex
	exit      exitInfo
	closeOnce sync.Once
}

// openOpts tells how a session is opened.
type openOpts struct {
	// slot takes one of the host's session slots for the session's life.
	slot bool
	// noWait fails at once when the server refuses the session (its
	// MaxSessions reached) instead of waiting for one of ours to end.
	noWait bool
}

// execMsg is the payload of an "exec" request (RFC 4254 §6.5).
type execMsg struct{ Command string }

// exitStatusMsg is the payload of an "exit-status" request.
type exitStatusMsg struct{ Status uint32 }

// exitSignalMsg is the payload of an "exit-signal" request.
type exitSignalMsg struct {
	Signal     string
	CoreDumped bool
	Message    string
	Lang       string
}

// startSession opens a session on c and runs cmd in it: stdin (then EOF)
// is written to the command, its stdout and stderr are copied to the
// writers, which must not fail. The command runs once startSession returns
// without error.
func startSession(ctx context.Context, c *conn, cmd string, stdin []byte, stdout, stderr io.Writer, o openOpts) (*session, error) {
	ch, reqs, release, err := c.open(ctx, o)
	if err != nil {
		return nil, err
	}
	s := &session{
		ch:      ch,
		exited:  make(chan struct{}),
		closed:  make(chan struct{}),
		outDone: make(chan struct{}),
		exit:    exitInfo{status: -1},
	}
	go s.serve(reqs, release)
	ok, err := ch.SendRequest("exec", true, gossh.Marshal(execMsg{Command: cmd}))
	if err != nil {
		s.close()
		return nil, c.lostError(err)
	}
	if !ok {
		s.close()
		return nil, errors.New("exec request refused by the server")
	}
	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		_, _ = io.Copy(stdout, ch)
	}()
	go func() {
		defer copies.Done()
		_, _ = io.Copy(stderr, ch.Stderr())
	}()
	go func() {
		copies.Wait()
		close(s.outDone)
	}()
	go func() {
		// A command that does not read its stdin makes this block on the
		// channel window until the channel closes: that is fine.
		if len(stdin) > 0 {
			_, _ = ch.Write(stdin)
		}
		_ = ch.CloseWrite()
	}()
	return s, nil
}

// serve handles the requests the server sends on the channel: the exit
// status or signal. It ends when the channel is closed, then frees the
// session's place.
func (s *session) serve(reqs <-chan *gossh.Request, release func()) {
	for req := range reqs {
		switch req.Type {
		case "exit-status":
			var m exitStatusMsg
			if gossh.Unmarshal(req.Payload, &m) == nil {
				s.mu.Lock()
				s.exit.status = int(m.Status)
				s.mu.Unlock()
				s.markExited()
			}
		case "exit-signal":
			var m exitSignalMsg
			if gossh.Unmarshal(req.Payload, &m) == nil {
				s.mu.Lock()
				s.exit.signal, s.exit.message = m.Signal, m.Message
				s.mu.Unlock()
				s.markExited()
			}
		}
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
	s.markExited()
	close(s.closed)
	release()
}

func (s *session) markExited() { s.exitOnce.Do(func() { close(s.exited) }) }

// exitInfo returns how the command ended, as far as known.
func (s *session) exitInfo() exitInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// finish waits up to delay for the output to reach EOF, then closes the
// channel. It reports whether the output was complete.
func (s *session) finish(delay time.Duration) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	complete := true
	select {
	case <-s.outDone:
	case <-t.C:
		complete = false
	}
	s.close()
	return complete
}

// close closes the channel; the server closes its side in turn.
func (s *session) close() { s.closeOnce.Do(func() { _ = s.ch.Close() }) }

// describe says how a command ended that did not exit 0, for errors.
func (e exitInfo) describe() string {
	switch {
	case e.signal != "":
		msg := "terminated by signal " + e.signal
		if e.message != "" {
			msg += " (" + e.message + ")"
		}
		return msg
	case e.status >= 0:
		return fmt.Sprintf("exit status %d", e.status)
	}
	return "no exit status"
}
