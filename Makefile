# gocr: see README.md.
GO ?= go

.PHONY: build demo test bench fuzz generate

build:
	$(GO) build -o bin/gocr ./cmd/gocr
	$(GO) build -o bin/gocr-plugin-aio ./plugins/aio/gocr-plugin-aio
	$(GO) build -o bin/gocr-plugin-devmap ./plugins/devmap/gocr-plugin-devmap

# A process counts, is dumped, restored and goes on counting (needs root).
demo:
	./scripts/demo.sh

# All tests (needs root, gcc and python3).
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

bench:
	$(GO) test -run XXX -bench . -benchtime 3x ./core/

fuzz:
	$(GO) test -run XXX -fuzz FuzzImage -fuzztime 60s ./core/image

generate:
	$(GO) generate ./...
