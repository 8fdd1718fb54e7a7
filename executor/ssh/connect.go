package ssh

import (
	"context"
	"fmt"

	"github.com/postrotate/postrotate/executor"
	gossh "golang.org/x/crypto/ssh"
)

// dial connects and logs in to t at addr within DialTimeout.
func (s *SSH) dial(ctx context.Context, t *executor.Target, addr string) (*gossh.Client, error) {
	cfg, err := clientConfig(t, addr, s.opts.DialTimeout)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	nc, err := s.opts.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	// Closing the connection when ctx ends bounds the handshake.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	cc, chans, reqs, err := gossh.NewClientConn(nc, addr, cfg)
	if !stop() { // ctx ended during the handshake and closed nc
		if err == nil {
			_ = cc.Close()
		}
		return nil, fmt.Errorf("ssh handshake: %w", ctx.Err())
	}
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("ssh handshake: %w", err)
	}
	return gossh.NewClient(cc, chans, reqs), nil
}

// execAlone runs a short command over a connection of its own, closed
// afterwards: for killing a process tree when the pooled connection has no
// session to spare.
func (s *SSH) execAlone(ctx context.Context, t *executor.Target, addr, cmd string) error {
	client, err := s.dial(ctx, t, addr)
	if err != nil {
		return err
	}
	c := &conn{client: client, addr: addr, dead: make(chan struct{}), freed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		_ = client.Wait()
		close(c.dead)
		close(done)
	}()
	defer func() {
		c.close()
		<-done
	}()
	r := &remote{s: s, target: t, addr: addr, conn: c, redialed: true}
	_, err = r.exec(ctx, cmd, nil, openOpts{})
	return err
}
