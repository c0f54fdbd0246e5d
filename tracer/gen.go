package tracer

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type event skbfate ../bpf/skbfate.c -- -I../bpf/include
