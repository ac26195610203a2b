package send

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestQueuePutClaimDone(t *testing.T) {
	q := &Queue{Dir: filepath.Join(t.TempDir(), "a", "outbox")}
	env := Envelope{From: "a@x", To: []string{"b@x", "c@x"}, Notify: []string{"FAILURE"}}
	msg := []byte("Subject: q\n\nbody\n\x00\xff binary too\n")
	name, err := q.Put(env, msg)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(q.Dir, name)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("queue file: %v %v", st, err)
	}
	if st, _ := os.Stat(q.Dir); st.Mode().Perm() != 0o700 {
		t.Errorf("queue directory mode %o", st.Mode().Perm())
	}
	if tmp, _ := os.ReadDir(filepath.Join(q.Dir, "tmp")); len(tmp) != 0 {
		t.Errorf("left in tmp/: %v", tmp)
	}
	names, _ := q.List()
	if len(names) != 1 || names[0] != name {
		t.Fatalf("List: %v", names)
	}
	e, err := q.Claim(name)
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Msg) != string(msg) || fmt.Sprint(e.Env) != fmt.Sprint(env) || e.Queued.IsZero() {
		t.Fatalf("read back %+v %q", e.Env, e.Msg)
	}
	// Held: another claim is refused.
	if _, err := q.Claim(name); !errors.Is(err, ErrBusy) {
		t.Errorf("a held message: %v, want ErrBusy", err)
	}
	if err := e.Done(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Claim(name); !errors.Is(err, ErrGone) {
		t.Errorf("a sent message: %v, want ErrGone", err)
	}
	if names, _ := q.List(); len(names) != 0 {
		t.Errorf("still listed: %v", names)
	}
}

func TestQueueFailAndCorrupt(t *testing.T) {
	q := &Queue{Dir: t.TempDir()}
	name, err := q.Put(Envelope{From: "a@x", To: []string{"b@x"}}, []byte("x\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := q.Claim(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Fail("RCPT <b@x>: 550 no"); err != nil {
		t.Fatal(err)
	}
	reason, err := os.ReadFile(filepath.Join(q.Dir, "failed", name+".reason"))
	if err != nil || !strings.Contains(string(reason), "550 no") {
		t.Fatalf("reason: %q %v", reason, err)
	}
	if _, err := os.Stat(filepath.Join(q.Dir, "failed", name)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(q.Dir, "0000.bad.msg"), []byte("not a queue file"), 0o600)
	if _, err := q.Claim("0000.bad.msg"); err == nil || !strings.Contains(err.Error(), "moved to") {
		t.Errorf("a corrupt file: %v", err)
	}
	failed, _ := q.Failed()
	if len(failed) != 2 {
		t.Errorf("failed/: %v", failed)
	}
	if names, _ := q.List(); len(names) != 0 {
		t.Errorf("left: %v", names)
	}
}

// TestQueueClaimsOnce: goroutines race to claim every message (each with
// its own open file, as separate processes have): every message is
// claimed and done exactly once.
func TestQueueClaimsOnce(t *testing.T) {
	q := &Queue{Dir: t.TempDir()}
	const n = 50
	for i := 0; i < n; i++ {
		if _, err := q.Put(Envelope{From: "a@x", To: []string{"b@x"}}, []byte(fmt.Sprintf("id %d\n", i))); err != nil {
			t.Fatal(err)
		}
	}
	names, _ := q.List()
	var mu sync.Mutex
	done := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, name := range names {
				e, err := q.Claim(name)
				if errors.Is(err, ErrBusy) || errors.Is(err, ErrGone) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				done[string(e.Msg)]++
				mu.Unlock()
				if err := e.Done(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if c := done[fmt.Sprintf("id %d\n", i)]; c != 1 {
			t.Errorf("message %d claimed %d times", i, c)
		}
	}
}

// TestFlush: sent messages leave the queue, refused ones go to failed/,
// deferred ones stay; a session-level refusal (AUTH) keeps them all.
func TestFlush(t *testing.T) {
	ts := startServer(t, func(ts *testServer) {
		ts.rcptReply["later@x"] = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "later"}
		ts.rcptReply["gone@x"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "gone"}
	})
	q := &Queue{Dir: t.TempDir()}
	for _, to := range []string{"ok1@x", "later@x", "gone@x", "ok2@x"} {
		if _, err := q.Put(Envelope{From: "a@x", To: []string{to}}, []byte("Subject: "+to+"\n\nx\n")); err != nil {
			t.Fatal(err)
		}
	}
	m := &Mailer{Connect: ts.dial, Relay: Relay{Helo: "client.test"}}
	var notes []string
	rep := Flush(context.Background(), q, m, func(s string) { notes = append(notes, s) })
	m.Close()
	if rep.Sent != 2 || rep.Left != 1 || rep.Failed != 1 || ExitCode(rep.Err) != 67 {
		t.Fatalf("report %+v (exit %d), notes:\n%s", rep, ExitCode(rep.Err), strings.Join(notes, "\n"))
	}
	if got := ts.messages(); len(got) != 2 || got[0].to[0] != "ok1@x" || got[1].to[0] != "ok2@x" {
		t.Fatalf("delivered %+v", got)
	}
	names, _ := q.List()
	failed, _ := q.Failed()
	if len(names) != 1 || len(failed) != 1 {
		t.Fatalf("queue %v, failed %v", names, failed)
	}

	// A relay that refuses the login: no message is at fault.
	ts.users = map[string]string{"alice": "right"}
	m = &Mailer{Connect: ts.dial, Relay: Relay{Auth: &Auth{User: "alice", Password: "wrong"}}}
	ts.mu.Lock()
	delete(ts.rcptReply, "later@x")
	ts.mu.Unlock()
	rep = Flush(context.Background(), q, m, nil)
	if rep.Sent != 0 || rep.Left != 1 || rep.Failed != 0 || ExitCode(rep.Err) != 77 {
		t.Fatalf("AUTH refused: %+v", rep)
	}
	// No link at all: everything stays.
	m = &Mailer{Connect: func(context.Context) (net.Conn, error) { return nil, errors.New("no route") }}
	rep = Flush(context.Background(), q, m, nil)
	if rep.Left != 1 || ExitCode(rep.Err) != 75 {
		t.Fatalf("no link: %+v", rep)
	}
	m = &Mailer{Connect: ts.dial, Relay: Relay{Auth: &Auth{User: "alice", Password: "right"}}}
	rep = Flush(context.Background(), q, m, nil)
	m.Close()
	if rep.Sent != 1 || rep.Left != 0 || rep.Err != nil {
		t.Fatalf("last flush: %+v", rep)
	}
	if names, _ := q.List(); len(names) != 0 {
		t.Fatalf("left: %v", names)
	}
}
