# gocr: see README.md.
GO ?= go

.PHONY: build install setup demo demo-gpu test bench bench-gpu fuzz generate

PREFIX ?= /usr/local

export PATH := $(PATH):/usr/local/go/bin

build:
	$(GO) build -o bin/gocr ./cmd/gocr
	$(GO) build -o bin/gocr-plugin-aio ./plugins/aio/gocr-plugin-aio
	$(GO) build -o bin/gocr-plugin-devmap ./plugins/devmap/gocr-plugin-devmap
	$(GO) build -o bin/gocr-plugin-amdgpu ./plugins/amdgpu/gocr-plugin-amdgpu
	$(GO) build -o bin/gocr-kfdemu ./plugins/amdgpu/gocr-kfdemu

# gocr and its plugins in $(PREFIX)/bin, and a criu link to gocr, which then takes CRIU's
# command line (see docs/criu.md). `make install PREFIX=/opt/gocr` to keep a real criu.
install: build
	install -d $(PREFIX)/bin
	install -m 0755 bin/gocr bin/gocr-plugin-aio bin/gocr-plugin-devmap bin/gocr-plugin-amdgpu $(PREFIX)/bin/
	ln -sf gocr $(PREFIX)/bin/criu

# What the demo and the tests need, installed when missing (apt).
setup:
	./scripts/setup.sh

# A process counts, is dumped, restored and goes on counting (needs root).
demo: setup
	./scripts/demo.sh

# A GPU job on an emulated /dev/kfd dumped with the amdgpu plugin and restored (needs root).
demo-gpu: setup
	./scripts/gpu-demo.sh

# All tests, with the race detector (needs root; setup installs gcc, python3, redis-server...
# when missing).
test: setup
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

bench:
	$(GO) test -run XXX -bench . -benchtime 3x ./core/

# Dump and restore of a GPU job with 1 GiB of BO memory, through the KFD emulator.
bench-gpu:
	$(GO) test -run XXX -bench GPUJob -benchtime 3x ./plugins/amdgpu/

fuzz:
	$(GO) test -run XXX -fuzz FuzzImage -fuzztime 60s ./core/image
	$(GO) test -run XXX -fuzz FuzzReceive -fuzztime 60s ./core/internal/pagesrv

generate:
	$(GO) generate ./...
