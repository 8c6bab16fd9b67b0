// Package example holds the broker's test page, embedded so the broker can
// serve it at /example/ without any file copying.
package example

import "embed"

// Files holds test.html (served as /example/test.html).
//
//go:embed *.html
var Files embed.FS
