package msgview

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestFieldsAndAreas(t *testing.T) {
	tests := []struct {
		name, raw      string
		fromLine, body string
		fields         string // Name=Unfold(Raw), joined by |
		header         string
	}{
		{"From_ line, continuation, body",
			"From a@b  Mon Jan  1 00:00:00 2024\nSubject: one\n\ttwo\nX-A:x\n\nbody\n",
			"From a@b  Mon Jan  1 00:00:00 2024", "body\n", "Subject=one\ttwo|X-A=x",
			"From a@b  Mon Jan  1 00:00:00 2024\nSubject: one\n\ttwo\nX-A:x\n\n"},
		{"CRLF", "Subject: s\r\nTo: t\r\n\r\nbody\r\n", "", "body\r\n", "Subject=s|To=t", "Subject: s\r\nTo: t\r\n\r\n"},
		{"no blank line", "Subject: s\nTo: t", "", "", "Subject=s|To=t", "Subject: s\nTo: t"},
		{"lines that are not fields are skipped", "Subject: s\nnot a field\nName With Space: x\n: empty name\nTo: t\n\nb", "", "b", "Subject=s|To=t", "Subject: s\nnot a field\nName With Space: x\n: empty name\nTo: t\n\n"},
		{"blank before the colon", "Subject : s\n\nb", "", "b", "Subject=s", "Subject : s\n\n"},
		{"only a From_ line", "From a@b", "From a@b", "", "", "From a@b"},
		{"empty", "", "", "", "", ""},
		{"a blank line of CRs", "Subject: s\n\r\r\nbody\n", "", "body\n", "Subject=s", "Subject: s\n\r\r\n"},
		{"CRs alone at the end", "Subject: s\n\r\r", "", "", "Subject=s", "Subject: s\n\r\r"},
		{"a CR inside a line is no blank line", "Subject: s\n\rX: y\n\nb", "", "b", "Subject=s", "Subject: s\n\rX: y\n\n"},
		{"a blank line first", "\nSubject: s\n", "", "Subject: s\n", "", "\n"},
		{"From_ line, then the blank line", "From a@b\n\nbody", "From a@b", "body", "", "From a@b\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New([]byte(tt.raw))
			if string(m.FromLine()) != tt.fromLine || string(m.Body()) != tt.body || string(m.Header()) != tt.header {
				t.Errorf("From_ %q body %q header %q", m.FromLine(), m.Body(), m.Header())
			}
			var fs []string
			for _, f := range m.Fields() {
				fs = append(fs, f.Name()+"="+Unfold(f.Raw))
			}
			if got := strings.Join(fs, "|"); got != tt.fields {
				t.Errorf("fields %q, want %q", got, tt.fields)
			}
			if m.Size() != len(tt.raw) {
				t.Errorf("size %d", m.Size())
			}
		})
	}
}

// TestGetFoldsLikeEqualFold: Get and Has find exactly the fields whose
// names strings.EqualFold matches, also beyond ASCII (the Kelvin sign
// and the long s fold to k and s).
func TestGetFoldsLikeEqualFold(t *testing.T) {
	names := []string{"List-Id", "LIST-ID", "list-id", "List-Ids", "List-I", "\u212aey", "Key", "KEY",
		"\u017fubject", "Subject", "SUBJECT", "X-\u00e9t\u00e9", "X-\u00c9T\u00c9", "\u0130d", "id", "X-\xff"}
	var raw strings.Builder
	for i, n := range names {
		fmt.Fprintf(&raw, "%s: %d\n", n, i)
	}
	raw.WriteString("\nbody\n")
	m := New([]byte(raw.String()))
	if len(m.Fields()) != len(names) {
		t.Fatalf("%d fields, want %d", len(m.Fields()), len(names))
	}
	for _, q := range append(names, "list-id", "kEy", "S\u212aY", "x-\u00c9t\u00e9", "") {
		var want []string
		for _, n := range names {
			if strings.EqualFold(n, q) {
				want = append(want, n)
			}
		}
		var got []string
		for _, f := range m.Get(q) {
			got = append(got, f.Name())
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("Get(%q) = %q, want %q", q, got, want)
		}
		if m.Has(q) != (len(want) > 0) {
			t.Errorf("Has(%q) = %v", q, m.Has(q))
		}
	}
}

func TestDecodeWords(t *testing.T) {
	for in, want := range map[string]string{
		"=?UTF-8?Q?R=C3=A9sum=C3=A9?=":                        "Résumé",
		"=?iso-8859-1?q?Andr=E9?= <a@b>":                      "André <a@b>",
		"=?utf-8?b?5pel5pys?= =?utf-8?b?6Kqe?=":               "日本語",
		"a =?utf-8?q?b?= c":                                   "a b c",
		"=?x-unknown?q?a?= =?utf-8?q?b?=":                     "=?x-unknown?q?a?= b",
		"=?utf-8?q?a?= =?utf-8?q?b?= =?x-unknown?q?c?=":       "ab =?x-unknown?q?c?=",
		"=?utf-8?q?a?=\t =?utf-8?q?b?= and =?x-unknown?q?c?=": "ab and =?x-unknown?q?c?=",
		"=?utf-8?q?broken":                                    "=?utf-8?q?broken",
		"=?utf-8?x?bad-encoding?= ok":                         "=?utf-8?x?bad-encoding?= ok",
		"=?gb2312?q?=C0=EE?=":                                 "李",
		"=?iso-2022-jp?b?GyRCJUYlOSVIGyhC?=":                  "テスト",
		"no words":                                            "no words",
	} {
		if got := DecodeWords(in); got != want {
			t.Errorf("DecodeWords(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAddresses(t *testing.T) {
	m := New([]byte("From: =?utf-8?q?Andr=C3=A9?= <Andre@Example.FR>\n" +
		"To: Doe, John <jd@example.com>, bare@example.org, Roe, Rick <rr@example.com>\n" +
		"Cc: undisclosed-recipients:;\n" +
		"Cc: \"Quoted, Name\" <q@example.net>, x..y@example.net\n\nb\n"))
	var got []string
	for _, n := range []string{"from", "to", "cc"} {
		for _, a := range m.Addresses(n) {
			got = append(got, n+":"+a.Name+"|"+a.Local+"|"+a.Domain)
		}
	}
	want := "from:André|Andre|Example.FR to:Doe, John|jd|example.com to:Roe, Rick|rr|example.com to:|bare|example.org cc:Quoted, Name|q|example.net cc:|x..y|example.net"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestListID(t *testing.T) {
	for raw, want := range map[string]string{
		"List-Id: Go Nuts <golang-nuts.googlegroups.com>\n\n": "golang-nuts.googlegroups.com",
		"List-Id: <a.example>\nList-Id: <b.example>\n\n":      "a.example",
		"List-Id: bare.example \n\n":                          "bare.example",
		"List-Id: =?utf-8?q?Caf=C3=A9?= <cafe.example>\n\n":   "cafe.example",
		"List-Id: unclosed <x.example\n\n":                    "unclosed <x.example",
		"Subject: none\n\n":                                   "",
	} {
		if got := New([]byte(raw)).ListID(); got != want {
			t.Errorf("%q: %q, want %q", raw, got, want)
		}
	}
}

func TestBodyText(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"plain", "Subject: s\n\nhello\n", "hello\n"},
		{"base64 utf-8", "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQK\n", "hello world\n"},
		{"quoted-printable latin-1", "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9 cr=E8me\n", "café crème\n"},
		{"multipart: text parts only, joined",
			"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\none\n--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\naGVsbG8=\n--b\nContent-Type: text/html\n\n<p>two</p>\n--b--\n",
			"one\n<p>two</p>"},
		{"missing final boundary keeps what was read",
			"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nonly part\n",
			"only part"},
		{"a line without colon in the header: raw body", "Subject: s\nbroken header line\n\nraw body\n", "raw body\n"},
		{"From_ line", "From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n", "body\n"},
		{"unknown charset kept as is", "Content-Type: text/plain; charset=x-unknown\n\nbytes\n", "bytes\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := New([]byte(tt.raw)).BodyText(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestResetIsNew: a Message Reset to a message sees it as New would,
// whatever it viewed and decoded before, with more or fewer fields.
func TestResetIsNew(t *testing.T) {
	msgs := []string{
		"From a@b  Mon Jan  1 00:00:00 2024\nSubject: =?UTF-8?Q?R=C3=A9sum=C3=A9?=\nX-Only-First: 1\nTo: a@example.org, b@example.org\n\nbody one\n",
		"Subject: two\n\nbody two\n",
		"From: =?iso-8859-1?Q?Andr=E9?= <andre@example.fr>\nSubject: three\nA: 1\nB: 2\nC: 3\nD: 4\nE: 5\nF: 6\n\nbody three\n",
		"",
		"Subject: last\r\nX-Only-First: no, here too\r\n\r\nbody\r\n",
	}
	view := func(m *Message) string {
		var b strings.Builder
		for i := range m.Fields() {
			f := &m.Fields()[i]
			fmt.Fprintf(&b, "%s=%q/%q|", f.Name(), f.Raw, m.Decoded(f))
		}
		fmt.Fprintf(&b, "get=%d body=%q from=%q", len(m.Get("X-Only-First")), m.Body(), m.FromLine())
		return b.String()
	}
	reused := New(nil)
	for _, raw := range msgs {
		reused.Reset([]byte(raw))
		if got, want := view(reused), view(New([]byte(raw))); got != want {
			t.Errorf("after Reset:\n\t%s\nNew:\n\t%s", got, want)
		}
	}
}

// nestedMultipart is a message of depth nested multiparts with a text
// part at the bottom and one at the top level.
func nestedMultipart(depth int) []byte {
	var b bytes.Buffer
	b.WriteString("Subject: nested\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b0\"\n\n")
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "--b%d\nContent-Type: multipart/mixed; boundary=\"b%d\"\n\n", i, i+1)
	}
	fmt.Fprintf(&b, "--b%d\nContent-Type: text/plain\n\ndeep text\n", depth)
	for i := depth; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\n", i)
		if i == 1 {
			b.WriteString("--b0\nContent-Type: text/plain\n\ntop text\n")
		}
	}
	return b.Bytes()
}

// TestBodyTextDepthBounded: deeply nested multiparts are searched to
// MaxMIMEDepth and no further, in bounded time (10,000 levels took
// 110 s; 100,000 more than 8 minutes).
func TestBodyTextDepthBounded(t *testing.T) {
	shallow := New(nestedMultipart(5)).BodyText()
	if !strings.Contains(shallow, "deep text") || !strings.Contains(shallow, "top text") {
		t.Errorf("5 levels: %q", shallow)
	}
	start := time.Now()
	deep := New(nestedMultipart(20000)).BodyText()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("20,000 levels took %v", took)
	}
	if strings.Contains(deep, "deep text") || !strings.Contains(deep, "top text") {
		t.Errorf("20,000 levels: the part below MaxMIMEDepth must be skipped, the top one kept: %.200q", deep)
	}
}
