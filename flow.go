package main

import (
	"context"
	"fmt"
	"io"
)

func flowCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return usageError{fmt.Errorf("flow: not implemented yet")}
}
