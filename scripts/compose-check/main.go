// compose-check loads Compose files the way `docker compose config` does (compose-go: schema
// validation, interpolation, merging of override files, profiles, env_file resolution and
// consistency checks) and prints the resulting project as JSON. No Docker engine is needed,
// so the project's tests can validate docker-compose.yml offline.
//
//	compose-check [--profile NAME]... FILE [OVERRIDE_FILE...]
//	compose-check --schema        # print the Compose Specification JSON schema it enforces
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/schema"
)

type profileList []string

func (p *profileList) String() string     { return strings.Join(*p, ",") }
func (p *profileList) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var profiles profileList
	printSchema := flag.Bool("schema", false, "print the Compose Specification JSON schema and exit")
	flag.Var(&profiles, "profile", "activate a profile (repeatable)")
	flag.Parse()

	if *printSchema {
		fmt.Print(schema.Schema)
		return
	}
	if flag.NArg() == 0 {
		fail("usage", fmt.Errorf("compose-check [--profile NAME]... FILE [OVERRIDE_FILE...]"))
	}
	wd, err := os.Getwd()
	if err != nil {
		fail("working directory", err)
	}
	options, err := cli.NewProjectOptions(flag.Args(),
		cli.WithWorkingDirectory(wd),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fail("options", err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail("invalid compose project", err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail("marshal", err)
	}
	fmt.Println(string(out))
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %s: %v\n", what, err)
	os.Exit(1)
}
