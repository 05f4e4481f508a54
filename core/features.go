package core

import (
	"fmt"
	"slices"
	"sync"

	"github.com/gocr/gocr/core/internal/linux"
	"github.com/gocr/gocr/core/internal/netlock"
)

// Feature is a kernel feature gocr uses, whether it is here, and what its absence costs.
type Feature struct {
	Name     string `json:"name"`
	Present  bool   `json:"present"`
	Required bool   `json:"required"` // gocr cannot dump or restore without it
	Detail   string `json:"detail,omitempty"`
	Cost     string `json:"cost,omitempty"` // what a user loses without it
	// For are the operations that cannot run without it (dump, restore, track).
	For []string `json:"for,omitempty"`
}

var (
	featuresOnce sync.Once
	features     []Feature
)

// Features probes, once, every kernel feature gocr uses.
func Features() []Feature {
	featuresOnce.Do(func() {
		for _, p := range linux.Probes() {
			features = append(features, Feature{Name: p.Name, Present: p.Err == nil, Required: p.Required, Detail: errText(p.Err), Cost: p.Cost, For: p.Ops})
		}
		err := netlock.Probe()
		features = append(features, Feature{Name: "nftables (network lock for TCP connections)", Present: err == nil, Detail: errText(err),
			Cost: "established TCP connections are taken without a network lock: a packet from the peer while the tree is away resets the connection"})
	})
	return features
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// missingKernelFeatures lists the required features that are missing.
func missingKernelFeatures() []Feature {
	var out []Feature
	for _, f := range Features() {
		if f.Required && !f.Present {
			out = append(out, f)
		}
	}
	return out
}

// needFeatures fails an operation at once, naming the feature, when this kernel lacks one
// it cannot run without (rather than deep inside with a raw errno).
func needFeatures(op string) error {
	for _, f := range Features() {
		if !f.Present && slices.Contains(f.For, op) {
			return fmt.Errorf("%s: this kernel lacks %s (%s): %w", op, f.Name, f.Cost, ErrUnsupported)
		}
	}
	return nil
}
