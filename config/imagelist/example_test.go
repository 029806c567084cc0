package imagelist_test

import (
	"fmt"
	"strings"

	"github.com/stowage/stowage/config/imagelist"
)

func ExampleParseText() {
	const list = `##base
alpine:3.20
library/alpine:3.20          # the same image again
quay.io/coreos/etcd@sha256:` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `
##apps
localhost:5000/team/app
Nginx:1
`
	l, err := imagelist.ParseText("images.txt", strings.NewReader(list))
	for _, ref := range l.Refs {
		fmt.Printf("%-6s %s\n", ref.Section, ref)
	}
	fmt.Println(err)
	// Output:
	// base   docker.io/library/alpine:3.20
	// base   quay.io/coreos/etcd@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
	// apps   localhost:5000/team/app:latest
	// images.txt:7: invalid image reference "Nginx:1": invalid reference format: repository name (library/Nginx) must be lowercase
}
