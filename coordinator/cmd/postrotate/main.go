// Command postrotate is the coordinator and command line of postrotate.
package main

import (
	"os"

	"github.com/postrotate/postrotate/coordinator/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
