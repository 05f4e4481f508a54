// A module, built as users build theirs: with the go version's defaults (since Go 1.24 a
// listener is multipath TCP).
module gohttp

go 1.26
