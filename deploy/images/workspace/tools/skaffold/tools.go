//go:build tools

// Package tools records the command this module builds, so that `go mod tidy` keeps every
// module it needs in go.mod and go.sum. The Dockerfile builds it with
// `go build github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold`.
package tools

import _ "github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold"
