package remote

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quickAck makes the connection acknowledge what it receives at once.
//
// sshd leaves Nagle's algorithm on for sessions without a terminal, so a
// small packet it sends while an earlier one is not yet acknowledged waits
// for our ACK; Linux delays that ACK up to 40 ms while we wait for the
// second packet. That cost about 40 ms a fetch on loopback (the first
// session on a connection took 50 ms instead of 5). TCP_QUICKACK turns the
// delay off, but only until the kernel decides otherwise, so it is set
// again before every read: a setsockopt per SSH packet read, nothing next
// to the decryption.
func quickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{TCPConn: tc, raw: raw}
}

type quickAckConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	c.raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
	return c.TCPConn.Read(p)
}
