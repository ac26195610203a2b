package msgview

import (
	"regexp"
	"strings"
	"sync"

	"github.com/emersion/go-message/mail"
)

// Address is one mailbox of an address header.
type Address struct {
	Name   string // display name, decoded
	Local  string // local part
	Domain string
}

// Addr is local@domain.
func (a Address) Addr() string {
	if a.Domain == "" {
		return a.Local
	}
	return a.Local + "@" + a.Domain
}

// Addresses returns the mailboxes in every field named name. Fields that
// the strict RFC 5322 parser rejects (unquoted commas in names, ".." in
// local parts, all common in the wild) are read by a lenient scan instead,
// so an odd header never hides an address from a rule.
func (m *Message) Addresses(name string) []Address {
	var out []Address
	for _, f := range m.Get(name) {
		v := Unfold(f.Raw)
		list, err := mail.ParseAddressList(v)
		if err == nil {
			for _, a := range list {
				out = append(out, split(a.Name, a.Address))
			}
			continue
		}
		out = append(out, lenientAddresses(DecodeWords(v))...)
	}
	return out
}

func split(name, addr string) Address {
	a := Address{Name: name}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		a.Local, a.Domain = addr[:i], addr[i+1:]
	} else {
		a.Local = addr
	}
	return a
}

// The regexps of lenientAddresses, compiled on first use rather than at
// start-up, which an MDA pays once per message.
var (
	angleAddr = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`<([^<>\s]+@[^<>\s]+)>`) })
	bareAddr  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[^\s<>(),;:"]+@[^\s<>(),;:"]+`) })
)

// lenientAddresses finds name <addr> pairs, then bare addresses. The name
// of an angle address is the text since the previous address, so that
// unquoted commas stay in it ("Doe, John <jd@example.com>").
func lenientAddresses(v string) []Address {
	var out []Address
	seen := make(map[string]bool)
	prev := 0
	for _, m := range angleAddr().FindAllStringSubmatchIndex(v, -1) {
		name := v[prev:m[0]]
		if bs := bareAddr().FindAllStringIndex(name, -1); len(bs) > 0 {
			name = name[bs[len(bs)-1][1]:] // after a bare address before it
		}
		name = strings.Trim(strings.TrimSpace(strings.TrimLeft(name, " \t,;")), `"`)
		addr := v[m[2]:m[3]]
		out = append(out, split(name, addr))
		seen[addr] = true
		prev = m[1]
	}
	for _, s := range bareAddr().FindAllString(v, -1) {
		if !seen[s] {
			out = append(out, split("", s))
		}
	}
	return out
}

// ListID returns the RFC 2919 list identifier: the text inside the angle
// brackets of the first List-Id field (or the whole value if there are
// none), as written; rules match it case-insensitively. It is "" when
// there is no List-Id.
func (m *Message) ListID() string {
	fs := m.Get("list-id")
	if len(fs) == 0 {
		return ""
	}
	v := m.Decoded(fs[0])
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	return strings.TrimSpace(v)
}
