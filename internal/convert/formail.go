package convert

import (
	"strconv"
	"strings"
)

// formail translates the formail calls mfilter has actions for: header
// edits in a filter (-A, -a, -I, -i, -R) and the duplicate check (-D). It
// reports false when the call is something else.
func (f *fileConv) formail(args []string, fl flags, res *recipeResult) (bool, error) {
	if len(args) >= 3 && args[0] == "-D" {
		return f.formailDup(args, fl, res), nil
	}
	if len(args) == 3 && (args[0] == "-rD" || args[0] == "-Dr") && (fl.w || fl.W) && fl.c {
		// The once-per-sender cache of an auto-reply: the reply action
		// keeps its own (days:), so this marks the e recipe after it.
		res.replyGate = true
		return true, nil
	}
	if !fl.f {
		return false, nil
	}
	var acts seq
	for i := 0; i < len(args); i++ {
		opt, val := args[i], ""
		if len(opt) < 2 || opt[0] != '-' {
			return false, nil
		}
		if len(opt) > 2 {
			opt, val = opt[:2], opt[2:]
		} else if i+1 < len(args) {
			i++
			val = args[i]
		} else {
			return false, nil
		}
		switch opt {
		case "-A", "-a", "-I", "-i":
			a := headerEdit(opt, val)
			if a == nil {
				return false, nil
			}
			acts = append(acts, a)
		case "-R":
			if i+1 >= len(args) {
				return false, nil
			}
			i++
			acts = append(acts, mapping{{"rename-header", mapping{{"from", strings.TrimSuffix(val, ":")}, {"to", strings.TrimSuffix(args[i], ":")}}}})
		default:
			return false, nil
		}
	}
	if len(acts) == 0 {
		return false, nil
	}
	res.then = append(res.then, acts...)
	return true, nil
}

// headerEdit is the action for formail -A, -a, -I or -i with the field
// value.
func headerEdit(opt, field string) any {
	k := strings.IndexByte(field, ':')
	if k <= 0 {
		if opt == "-I" && field != "" && !strings.ContainsAny(field, " \t") {
			return mapping{{"remove-header", field}}
		}
		return nil
	}
	if strings.TrimSpace(field[k+1:]) == "" {
		if opt == "-I" {
			return mapping{{"remove-header", field[:k]}}
		}
		return nil
	}
	key := map[string]string{"-A": "add-header", "-a": "add-header-if-missing", "-I": "set-header", "-i": "supersede-header"}[opt]
	return mapping{{key, field}}
}

// formailDup translates "| formail -D size cache": formail exits 0 for a
// duplicate, which as a waited-for pipe delivers (drops) the message.
func (f *fileConv) formailDup(args []string, fl flags, res *recipeResult) bool {
	size, err := strconv.Atoi(args[1])
	if err != nil || len(args) != 3 || !(fl.w || fl.W) || fl.f {
		return false
	}
	// formail -D stores nothing for a message without Message-ID.
	dup := mapping{{"duplicate", mapping{{"cache", args[2]}, {"size", plain(strconv.Itoa(size))}, {"body-hash", plain("false")}}}}
	res.cond = andCond(dup, res.cond)
	if !fl.c {
		res.then = append(res.then, plain("discard"))
		res.delivering = true
	}
	return true
}
