package amdgpu

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// DefaultTopology is where KFD publishes its topology; $GOCR_AMDGPU_TOPOLOGY overrides it (a
// container's view, or the test emulator's).
const DefaultTopology = "/sys/class/kfd/kfd/topology"

// GPU is one GPU node of the KFD topology, as the image keeps it.
type GPU struct {
	ID    uint32            `json:"gpu_id"`
	Minor uint32            `json:"render_minor"` // /dev/dri/renderD<Minor>
	Props map[string]uint64 `json:"properties"`
	VRAM  uint64            `json:"vram_size"`
	Links []uint64          `json:"io_link_types"` // 2 PCIe, 11 XGMI
}

func (g GPU) String() string {
	return fmt.Sprintf("GPU %#x (renderD%d, device %#x)", g.ID, g.Minor, g.Props["device_id"])
}

// ReadTopology reads the GPU nodes under root (nodes/N/{gpu_id,properties,mem_banks,io_links}),
// in node order: the GPUs this process may use. CPU nodes (gpu_id 0) are left out, and so are
// the GPUs of a container's host that are not the container's: nodes the kernel does not let
// it read (EPERM, the device cgroup) and GPUs whose render node is not in its /dev/dri.
func ReadTopology(root string) ([]GPU, error) {
	ents, err := os.ReadDir(filepath.Join(root, "nodes"))
	if err != nil {
		return nil, fmt.Errorf("read the KFD topology: %w", err)
	}
	var nodes []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			nodes = append(nodes, n)
		}
	}
	sort.Ints(nodes)
	var out []GPU
	for _, n := range nodes {
		dir := filepath.Join(root, "nodes", strconv.Itoa(n))
		b, err := os.ReadFile(filepath.Join(dir, "gpu_id"))
		if errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the KFD topology: %w", err)
		}
		id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("read the KFD topology: node %d: gpu_id %q", n, b)
		}
		if id == 0 {
			continue
		}
		props, err := readProps(filepath.Join(dir, "properties"))
		if errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, err
		}
		g := GPU{ID: uint32(id), Minor: uint32(props["drm_render_minor"]), Props: props}
		if _, err := os.Stat(fmt.Sprintf("%s%d", renderPrefix, g.Minor)); errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			continue
		}
		banks, _ := filepath.Glob(filepath.Join(dir, "mem_banks", "*", "properties"))
		for _, bank := range banks {
			p, err := readProps(bank)
			if err != nil {
				return nil, err
			}
			g.VRAM += p["size_in_bytes"]
		}
		links, _ := filepath.Glob(filepath.Join(dir, "io_links", "*", "properties"))
		sort.Strings(links)
		for _, link := range links {
			p, err := readProps(link)
			if err != nil {
				return nil, err
			}
			g.Links = append(g.Links, p["type"])
		}
		out = append(out, g)
	}
	return out, nil
}

func readProps(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the KFD topology: %w", err)
	}
	defer f.Close()
	props := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			props[k] = n
		}
	}
	return props, sc.Err()
}

// Properties a restored GPU must have exactly as the dumped one (amdgpu_plugin_topology.c):
// the shape of the compute units, the queues and engines, the device.
var sameProps = []string{"simd_count", "mem_banks_count", "io_links_count", "max_waves_per_simd", "lds_size_in_kb",
	"wave_front_size", "array_count", "simd_arrays_per_engine", "cu_per_simd_array", "simd_per_cu",
	"max_slots_scratch_cu", "vendor_id", "device_id", "num_sdma_engines", "num_sdma_xgmi_engines",
	"num_sdma_queues_per_engine", "num_cp_queues", "capability"}

// Properties a restored GPU must have at least as large: firmware no older, no fewer resources.
var atLeastProps = []string{"num_gws", "caches_count", "fw_version", "sdma_fw_version"}

// linkXGMI is the io_link type of an XGMI link, which PCIe cannot replace.
const linkXGMI = 11

// differences says, in words, why GPU here cannot take the place of GPU was; none if it can.
func differences(was, here GPU) []string {
	var out []string
	for _, k := range sameProps {
		if was.Props[k] != here.Props[k] {
			out = append(out, fmt.Sprintf("%s is %d here, %d in the image", k, here.Props[k], was.Props[k]))
		}
	}
	for _, k := range atLeastProps {
		if here.Props[k] < was.Props[k] {
			out = append(out, fmt.Sprintf("%s is %d here, below the image's %d", k, here.Props[k], was.Props[k]))
		}
	}
	if here.VRAM < was.VRAM {
		out = append(out, fmt.Sprintf("VRAM is %d MiB here, %d MiB in the image", here.VRAM>>20, was.VRAM>>20))
	}
	count := func(links []uint64, t uint64) (n int) {
		for _, l := range links {
			if l == t {
				n++
			}
		}
		return n
	}
	if len(here.Links) < len(was.Links) {
		out = append(out, fmt.Sprintf("%d io links here, %d in the image", len(here.Links), len(was.Links)))
	} else if x, y := count(here.Links, linkXGMI), count(was.Links, linkXGMI); x < y {
		out = append(out, fmt.Sprintf("%d XGMI links here, %d in the image (PCIe cannot replace XGMI)", x, y))
	}
	return out
}

// Match gives each GPU of the image a GPU here that can take its place, keeping a GPU's own id
// where that GPU is here and fits; it returns image id -> id here, or every problem found.
func Match(image, here []GPU) (map[uint32]uint32, []string) {
	if len(image) != len(here) {
		return nil, []string{fmt.Sprintf("the image was dumped with %d GPUs and %d are here (a restore needs as many GPUs as the job saw)", len(image), len(here))}
	}
	fits := make([][]int, len(image)) // for each image GPU, the GPUs here that fit, same id first
	var problems []string
	for i, was := range image {
		var first []int
		var others []int
		best := []string(nil)
		var bestGPU GPU
		for j, g := range here {
			d := differences(was, g)
			switch {
			case len(d) == 0 && g.ID == was.ID:
				first = append(first, j)
			case len(d) == 0:
				others = append(others, j)
			case best == nil || len(d) < len(best):
				best, bestGPU = d, g
			}
		}
		fits[i] = append(first, others...)
		if len(fits[i]) == 0 {
			problems = append(problems, fmt.Sprintf("%s of the image matches no GPU here; the closest, %s: %s", was, bestGPU, strings.Join(best, ", ")))
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	used := make([]bool, len(here))
	pick := make([]int, len(image))
	var try func(i int) bool
	try = func(i int) bool {
		if i == len(image) {
			return true
		}
		for _, j := range fits[i] {
			if !used[j] {
				used[j], pick[i] = true, j
				if try(i + 1) {
					return true
				}
				used[j] = false
			}
		}
		return false
	}
	if !try(0) {
		// Some GPU here fits none of the image's: say how the closest differs.
		for j, g := range here {
			var best []string
			var bestGPU GPU
			fitsOne := false
			for i, was := range image {
				fitsOne = fitsOne || slices.Contains(fits[i], j)
				if d := differences(was, g); len(d) > 0 && (best == nil || len(d) < len(best)) {
					best, bestGPU = d, was
				}
			}
			if !fitsOne && best != nil {
				problems = append(problems, fmt.Sprintf("%s here can take the place of no GPU of the image; against the closest, %s of the image: %s", g, bestGPU, strings.Join(best, ", ")))
			}
		}
		if len(problems) == 0 {
			problems = []string{"each GPU of the image fits some GPU here, but not each its own one"}
		}
		return nil, problems
	}
	out := map[uint32]uint32{}
	for i, j := range pick {
		out[image[i].ID] = here[j].ID
	}
	return out, nil
}
