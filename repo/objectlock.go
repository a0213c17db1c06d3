package repo

import (
	"fmt"
	"time"
)

// Object Lock modes recorded in the config object.
const (
	LockGovernance = "governance"
	LockCompliance = "compliance"
)

// ObjectLock is the S3 Object Lock retention that every object pgark
// writes carries: WAL, backups, dumps and every metadata object, the config
// object included (its compare-and-swap writes new versions, each locked).
// The repository lock (locks/) is the exception: it is rewritten every few
// minutes and protects nothing once released.
type ObjectLock struct {
	Mode string `json:"mode"` // LockGovernance or LockCompliance
	Days int    `json:"days"`
}

// Validate checks the mode and the period (nil is valid: no lock).
func (l *ObjectLock) Validate() error {
	if l == nil {
		return nil
	}
	if l.Mode != LockGovernance && l.Mode != LockCompliance {
		return fmt.Errorf("object lock mode %q is not %s or %s", l.Mode, LockGovernance, LockCompliance)
	}
	if l.Days < 1 || l.Days > 36500 {
		return fmt.Errorf("object lock retention of %d days is outside 1 to 36500", l.Days)
	}
	return nil
}

// Period is the retention as a duration.
func (l *ObjectLock) Period() time.Duration {
	if l == nil {
		return 0
	}
	return time.Duration(l.Days) * 24 * time.Hour
}

// LockExempt are the key prefixes written without retention.
var LockExempt = []string{"locks/"}
