// Command azcontainer creates a blob container for the benchmarks
// (bench/wal.sh on Azurite): pgark never creates containers, and a Shared
// Key signature is more than a shell script should compute.
//
//	AZURE_STORAGE_CONNECTION_STRING=... azcontainer NAME
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: AZURE_STORAGE_CONNECTION_STRING=... azcontainer NAME")
		os.Exit(2)
	}
	if err := run(os.Getenv("AZURE_STORAGE_CONNECTION_STRING"), os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "azcontainer:", err)
		os.Exit(1)
	}
}

func run(connStr, name string) error {
	cc, err := container.NewClientFromConnectionString(connStr, name, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cc.Create(ctx, nil); err != nil {
		return fmt.Errorf("create container %s: %w", name, err)
	}
	return nil
}
