package origin

import "sync"

// cancels is the set of jobs this origin canceled (by job id), so a due
// delayed job that was canceled while it waited is not moved into the jobs
// stream. Safe for concurrent use.
type cancels struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (c *cancels) add(job string) {
	c.mu.Lock()
	if c.ids == nil {
		c.ids = make(map[string]struct{})
	}
	c.ids[job] = struct{}{}
	c.mu.Unlock()
}

func (c *cancels) has(job string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[job]
	return ok
}
