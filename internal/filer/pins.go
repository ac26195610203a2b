package filer

import "github.com/mfilter/mfilter/deliver"

// pinSet holds the mboxes that a batch appended messages to along with
// other folders: if such a message fails at the batch's commit, its
// append must be taken back, which only works while nothing was appended
// after it, so later appends to these mboxes wait for the commit.
type pinSet map[string]bool

// add pins the mboxes of ds, one message's deliveries, if there are
// others.
func (p *pinSet) add(ds []*deliver.Delivery) {
	if len(ds) < 2 {
		return
	}
	for _, d := range ds {
		if d.Folder.Kind == deliver.Mbox {
			if *p == nil {
				*p = make(pinSet)
			}
			(*p)[d.Folder.Path] = true
		}
	}
}

// holds reports whether plan appends to a pinned mbox.
func (p pinSet) holds(plan Plan) bool {
	if len(p) == 0 {
		return false
	}
	for _, st := range plan.steps() {
		if st.Kind == StepFolder && st.Folder.Kind == deliver.Mbox && p[st.Folder.Path] {
			return true
		}
	}
	return false
}
