package scenario

import (
	"errors"
	"fmt"
	"strings"
)

// splitWords splits a command line into arguments as a POSIX shell does,
// without running one: 'single quotes' keep everything, "double quotes"
// keep everything but \" \\ \$ and \` (backslash escapes), a backslash
// outside quotes escapes the next character. There is no expansion: the
// characters a shell would act on (| ; & < > $ ` ( ) and a leading #)
// must be quoted, so a command never means something other than what it
// looks like.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("a single quote (') is not closed")
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				} else if s[i] == '$' || s[i] == '`' {
					return nil, fmt.Errorf("%q inside double quotes would be expanded by a shell; there is none here: use single quotes", s[i])
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("a double quote (\") is not closed")
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("a backslash ends the command: nothing to escape")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case strings.IndexByte("|;&<>$`()", c) >= 0 || c == '#' && !inWord:
			return nil, fmt.Errorf("%q: commands run without a shell (no pipes, redirections, variables or comments): quote it to pass it as it is", c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
