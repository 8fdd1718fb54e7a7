package ssh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// ErrClosed is returned by Run once the executor is closed.
var ErrClosed = errors.New("ssh executor closed")

// connLostError tells that a connection died under a session.
type connLostError struct {
	addr string
	err  error
}

func (e *connLostError) Error() string {
	return fmt.Sprintf("connection to %s lost: %v", e.addr, e.err)
}

func (e *connLostError) Unwrap() error { return e.err }

// conn is one SSH connection to a target, shared by the jobs with the same
// pool key.
type conn struct {
	client *gossh.Client
	key    string
	addr   string
	slots  chan struct{} // the host's session slots, shared by every connection to it
	dead   chan struct{} // closed when the connection is gone

	closeOnce sync.Once

	mu     sync.Mutex
	active int           // sessions open on this connection
	freed  chan struct{} // closed, and replaced, whenever one of them ends
	system string        // uname -s, once known

	// users and lastUsed are guarded by the pool's mutex.
	users    int
	lastUsed time.Time
}

// maxIdleRetries bounds how often a session refused by the server is
// retried when no session of ours on the connection could free a place.
const maxIdleRetries = 8

// open opens a session channel. When the server refuses it because its
// MaxSessions is reached, it waits for one of the sessions of this
// connection to end and tries again (unless o.noWait). The release function
// must be called once the channel is closed.
func (c *conn) open(ctx context.Context, o openOpts) (gossh.Channel, <-chan *gossh.Request, func(), error) {
	idleRetries := 0
	for attempt := 0; ; attempt++ {
		if o.slot {
			if err := c.takeSlot(ctx); err != nil {
				return nil, nil, nil, err
			}
		}
		c.mu.Lock()
		freed, active := c.freed, c.active
		c.mu.Unlock()
		ch, reqs, err := c.client.OpenChannel("session", nil)
		if err == nil {
			return ch, reqs, c.opened(o.slot), nil
		}
		if o.slot {
			<-c.slots
		}
		var refused *gossh.OpenChannelError
		if !errors.As(err, &refused) {
			c.close()
			return nil, nil, nil, c.lostError(err)
		}
		// OpenSSH says "open failed" (connect failed) when MaxSessions is
		// reached; other servers say prohibited or resource shortage.
		limited := refused.Reason != gossh.UnknownChannelType
		if active == 0 {
			idleRetries++
		}
		if !limited || o.noWait || idleRetries > maxIdleRetries {
			return nil, nil, nil, fmt.Errorf("open session: %w", err)
		}
		if err := c.waitFreed(ctx, freed, attempt, err); err != nil {
			return nil, nil, nil, err
		}
	}
}

// takeSlot takes one of the host's session slots.
func (c *conn) takeSlot(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for a session slot: %w", ctx.Err())
	case <-c.dead:
		return c.lostError(errors.New("connection closed"))
	}
}

// opened counts a session just opened, and returns the function that
// uncounts it, and gives back its slot when it took one.
func (c *conn) opened(slot bool) func() {
	c.mu.Lock()
	c.active++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.active--
		close(c.freed)
		c.freed = make(chan struct{})
		c.mu.Unlock()
		if slot {
			<-c.slots
		}
	}
}

// waitFreed waits, after the server refused a session with refused as its
// MaxSessions is reached, for a session of this connection to end (freed
// closed) or, none open, for a pause that grows with attempt.
func (c *conn) waitFreed(ctx context.Context, freed <-chan struct{}, attempt int, refused error) error {
	pause := time.NewTimer(min(10*time.Millisecond<<min(attempt, 7), time.Second))
	defer pause.Stop()
	select {
	case <-freed:
	case <-pause.C:
	case <-ctx.Done():
		return fmt.Errorf("wait for the server to allow a session (%v): %w", refused, ctx.Err())
	case <-c.dead:
	}
	return nil
}

// lostError wraps err as a lost connection, closing the connection.
func (c *conn) lostError(err error) error {
	c.close()
	return &connLostError{addr: c.addr, err: err}
}

func (c *conn) close() { c.closeOnce.Do(func() { _ = c.client.Close() }) }

func (c *conn) isDead() bool {
	if c == nil {
		return true
	}
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// waitDead waits up to d for the connection to be found dead.
func (c *conn) waitDead(d time.Duration) bool {
	if c == nil {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.dead:
		return true
	case <-t.C:
		return false
	}
}

func (c *conn) getSystem() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.system
}

func (c *conn) setSystem(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.system = s
}

func (c *conn) sessions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

// pool holds the open connections, one per pool key, and the session slots
// of each host.
type pool struct {
	keepAlive   time.Duration
	idleTimeout time.Duration
	maxSessions int

	mu      sync.Mutex
	closed  bool
	entries map[string]*entry
	conns   map[*conn]struct{}
	slots   map[string]chan struct{}
	wg      sync.WaitGroup // the goroutines of every connection
}

// entry is the connection of one pool key.
type entry struct {
	lock chan struct{} // held (one element) while dialling
	conn *conn
}

func newPool(keepAlive, idleTimeout time.Duration, maxSessions int) *pool {
	return &pool{
		keepAlive:   keepAlive,
		idleTimeout: idleTimeout,
		maxSessions: maxSessions,
		entries:     map[string]*entry{},
		conns:       map[*conn]struct{}{},
		slots:       map[string]chan struct{}{},
	}
}

// get returns the live connection for key, dialling it when there is none.
// The caller must put it back.
func (p *pool) get(ctx context.Context, key, addr string, dial func(context.Context) (*gossh.Client, error)) (*conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	e := p.entries[key]
	if e == nil {
		e = &entry{lock: make(chan struct{}, 1)}
		p.entries[key] = e
	}
	p.mu.Unlock()

	select {
	case e.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-e.lock }()

	p.mu.Lock()
	if c := e.conn; c != nil && !c.isDead() {
		c.users++
		p.mu.Unlock()
		return c, nil
	}
	e.conn = nil
	p.mu.Unlock()

	client, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = client.Close()
		return nil, ErrClosed
	}
	slots := p.slots[addr]
	if slots == nil {
		slots = make(chan struct{}, p.maxSessions)
		p.slots[addr] = slots
	}
	c := &conn{
		client: client, key: key, addr: addr, slots: slots,
		dead: make(chan struct{}), freed: make(chan struct{}),
		users: 1, lastUsed: time.Now(),
	}
	e.conn = c
	if p.entries[key] == nil { // dropped meanwhile
		p.entries[key] = e
	}
	p.conns[c] = struct{}{}
	p.wg.Add(2)
	go p.watch(c)
	go p.keepalive(c)
	return c, nil
}

// put gives back a connection that get returned.
func (p *pool) put(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.users--
	c.lastUsed = time.Now()
}

// drop closes c and forgets it, so that the next get dials again.
func (p *pool) drop(c *conn) {
	c.close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget(c)
}

// forget removes c from its entry. p.mu must be held.
func (p *pool) forget(c *conn) {
	if e := p.entries[c.key]; e != nil && e.conn == c {
		e.conn = nil
		delete(p.entries, c.key)
	}
}

// watch waits for the connection to end, then forgets it.
func (p *pool) watch(c *conn) {
	defer p.wg.Done()
	_ = c.client.Wait()
	close(c.dead)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget(c)
	delete(p.conns, c)
}

// keepalive sends a keepalive@openssh.com request every keepAlive and
// closes the connection when one fails or goes unanswered for keepAlive;
// it also closes the connection once it has been unused for idleTimeout.
func (p *pool) keepalive(c *conn) {
	defer p.wg.Done()
	tick := time.NewTicker(p.keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		if p.idle(c) {
			c.close()
			continue // until dead
		}
		reply := make(chan error, 1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		wait := time.NewTimer(p.keepAlive)
		select {
		case err := <-reply:
			if err != nil {
				c.close()
			}
		case <-wait.C:
			c.close()
		case <-c.dead:
		}
		wait.Stop()
	}
}

// idle reports whether c has been unused for idleTimeout, and if so forgets
// it, so that no get returns it any more.
func (p *pool) idle(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.users > 0 || c.sessions() > 0 || time.Since(c.lastUsed) < p.idleTimeout {
		return false
	}
	p.forget(c)
	return true
}

// close closes every connection and waits for their goroutines. Safe to
// call twice.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
}
