// Package sysexits holds the exit codes of sysexits.h that mfilter uses,
// so that MTAs, fetchmail and cron read them the way they read procmail's.
package sysexits

const (
	OK          = 0  // everything delivered (a discard counts)
	Usage       = 64 // EX_USAGE: bad command line
	DataErr     = 65 // EX_DATAERR: bad input data
	NoUser      = 67 // EX_NOUSER: addressee unknown (mfilter send: a recipient refused)
	Unavailable = 69 // EX_UNAVAILABLE: a service is unavailable
	Software    = 70 // EX_SOFTWARE: internal error
	CantCreat   = 73 // EX_CANTCREAT: cannot create output
	IOErr       = 74 // EX_IOERR: input/output error
	TempFail    = 75 // EX_TEMPFAIL: try again later; nothing was lost
	NoPerm      = 77 // EX_NOPERM: insecure rules file
	Config      = 78 // EX_CONFIG: configuration error
)
