package rules

import (
	"fmt"
	"testing"
)

// A varTable gives back the last value set for each name, before and
// after it moves from its list to a map.
func TestVarTable(t *testing.T) {
	for _, n := range []int{1, maxVarList - 1, maxVarList, maxVarList + 1, 3 * maxVarList} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			vt := newVarTable(8)
			for i := range n {
				vt.set(fmt.Sprintf("v%d", i), variable{fmt.Sprintf("first %d", i), false})
			}
			for i := 0; i < n; i += 2 { // overwrite every other one
				vt.set(fmt.Sprintf("v%d", i), variable{fmt.Sprintf("second %d", i), true})
			}
			for i := range n {
				want := variable{fmt.Sprintf("first %d", i), false}
				if i%2 == 0 {
					want = variable{fmt.Sprintf("second %d", i), true}
				}
				if got := vt.get(fmt.Sprintf("v%d", i)); got != want {
					t.Errorf("v%d = %+v, want %+v", i, got, want)
				}
			}
			if got := vt.get("unset"); got != (variable{}) {
				t.Errorf("unset = %+v", got)
			}
			if inMap := vt.m != nil; inMap != (n > maxVarList) {
				t.Errorf("%d names: in a map %v", n, inMap)
			}
		})
	}
}
