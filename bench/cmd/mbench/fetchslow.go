package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The slow-link stage: the transfer stage's two sides through a TCP proxy
// that paces every byte to a link rate (10 Mbit/s by default) each way,
// as a DSL or a busy office link would, so that the bytes on the wire,
// not the CPUs at either end, set the time. It is where compressing
// harder pays: mfilter's zstd level adapts to the link (remote/adapt.go),
// scp -C keeps zlib level 6.
type slowLink struct {
	mbit   float64
	target float64
	sides  []fetchSide
	rows   []fetchRow
}

func (s *slowLink) flags(fs *flag.FlagSet) {
	fs.Float64Var(&s.mbit, "slow-mbit", 10, "rate of the slow-link stage's paced proxy, in Mbit/s each way (0: no slow-link stage)")
	fs.Float64Var(&s.target, "slow-target", 1.5, "speed-up over ssh mv + scp -C + ssh rm that mfilter's transfer should reach on the slow link")
}

func (o *fetchOptions) slowStage() error {
	if o.slow.mbit <= 0 || len(o.slow.sides) == 0 {
		return nil
	}
	rate := o.slow.mbit * 1e6 / 8
	p, err := newPacedProxy(o.srv.sshdAddr, rate)
	if err != nil {
		return err
	}
	defer p.ln.Close()
	port := p.ln.Addr().(*net.TCPAddr).Port
	kh, err := os.ReadFile(o.srv.knownHosts)
	if err != nil {
		return err
	}
	// The proxy's address needs the host key too: copy sshd's line.
	line := strings.SplitN(string(kh), "\n", 2)[0]
	line = fmt.Sprintf("[127.0.0.1]:%d", port) + line[strings.IndexByte(line, ' '):] + "\n"
	if err := os.WriteFile(o.srv.knownHosts, append(kh, line...), 0o600); err != nil {
		return err
	}
	fmt.Printf("\nslow link: %.1f MB spool through a proxy paced to %g Mbit/s each way, claim + stream + decompress (+ remove)\n", float64(len(o.transferSpool))/1e6, o.slow.mbit)
	sides := o.slow.sides
	rows := make([]fetchRow, len(sides))
	for k, s := range sides {
		rows[k] = fetchRow{stage: "slow", label: s.label, spool: int64(len(o.transferSpool))}
	}
	for run := 1; run <= o.runs; run++ {
		for i := range sides {
			k := i
			if run%2 == 1 {
				k = len(sides) - 1 - i
			}
			s := sides[k]
			name := fmt.Sprintf("slow-run%d-%d", run, k)
			spoolPath := filepath.Join(o.serverDir, name)
			if err := os.WriteFile(spoolPath, o.transferSpool, 0o600); err != nil {
				return err
			}
			dir := filepath.Join(o.clientDir, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			syscall.Sync()
			before := p.snapshot()
			r, out, err := fetchMeasure(s.command(spoolPath, dir, port), dir+".time")
			if err != nil {
				return fmt.Errorf("%s, slow run %d: %v", s.label, run, err)
			}
			w, err := p.since(before)
			if err != nil {
				return err
			}
			if err := s.check(spoolPath, dir, out); err != nil {
				return fmt.Errorf("%s, slow run %d: %v", s.label, run, err)
			}
			rows[k].runs = append(rows[k].runs, fetchRun{result: r, wire: w, counted: true})
			if o.verbose {
				fmt.Printf("  slow run %d %-44s %s  %d bytes up, %d down  %s\n", run, s.label, secs(r.wall), w.up, w.down, strings.TrimSpace(string(out)))
			}
		}
	}
	for k := range rows {
		sorted := slices.Clone(rows[k].runs)
		slices.SortFunc(sorted, func(a, b fetchRun) int { return int(a.wall - b.wall) })
		rows[k].best = sorted[0]
		rows[k].median = sorted[(len(sorted)-1)/2]
		rows[k].wire = rows[k].median.wire
	}
	o.slow.rows = rows
	return nil
}

func (o *fetchOptions) slowReport() {
	if len(o.slow.rows) != 2 {
		return
	}
	h, m := o.slow.rows[0], o.slow.rows[1]
	med := h.median.wall.Seconds() / m.median.wall.Seconds()
	best := h.best.wall.Seconds() / m.best.wall.Seconds()
	ok := "met"
	if med < o.slow.target {
		ok = "MISSED"
	}
	fmt.Printf("slow link (%g Mbit/s): scp -C / mfilter %.2fx median, %.2fx best (target %gx: %s)\n", o.slow.mbit, med, best, o.slow.target, ok)
	fmt.Printf("slow link: bytes over SSH mfilter / scp -C %.3f (%d and %d bytes, median runs)\n",
		float64(m.wire.total())/float64(h.wire.total()), m.wire.total(), h.wire.total())
}

// pacedProxy relays TCP to target at rate bytes a second in each
// direction, shared by all its connections (one link), and counts the
// bytes as countingProxy does.
type pacedProxy struct {
	countingProxy
	rate     float64
	upLink   pacer
	downLink pacer
}

type pacer struct {
	mu   sync.Mutex
	next time.Time // when the link is free again
}

// wait holds n bytes until the link has carried the bytes before them.
func (p *pacer) wait(n int, rate float64) {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(n) / rate * float64(time.Second)))
	until := p.next
	p.mu.Unlock()
	time.Sleep(time.Until(until))
}

func newPacedProxy(target string, rate float64) (*pacedProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &pacedProxy{rate: rate}
	p.ln, p.target = ln, target
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			p.active.Add(1)
			go p.relay(c)
		}
	}()
	return p, nil
}

func (p *pacedProxy) relay(client net.Conn) {
	defer p.active.Add(-1)
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	done := make(chan struct{})
	go func() {
		p.pipe(server, client, &p.upLink, &p.up)
		server.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	p.pipe(client, server, &p.downLink, &p.down)
	client.(*net.TCPConn).CloseWrite()
	<-done
}

// pipe copies in slices of 4 kB, each sent when the link is free.
func (p *pacedProxy) pipe(dst io.Writer, src io.Reader, l *pacer, count *atomic.Int64) {
	buf := make([]byte, 4<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.wait(n, p.rate)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			count.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}
