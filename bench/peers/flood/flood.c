// SPDX-License-Identifier: GPL-2.0
/*
 * flood: the workload of pktfate's peer benchmark (bench/peers). Built
 * static on the host (gcc -static), run inside the guest.
 *
 *   flood MS
 *	sends 16-byte UDP datagrams to 127.0.0.1:9 (closed: each one is
 *	dropped with NO_SOCKET and counted in Udp NoPorts) as fast as it can
 *	for MS milliseconds of CLOCK_MONOTONIC, then prints
 *	"flood sent=N ns=T".
 *   flood -probe MS INTERVAL_US PORT FILE
 *	sends one datagram to 127.0.0.1:PORT every INTERVAL_US microseconds
 *	for MS milliseconds and writes the CLOCK_MONOTONIC time of each send,
 *	in ns, one a line, to FILE; prints "probe sent=N".
 *
 * Unconnected sendto() is used so that the ICMP port-unreachable replies
 * never turn into ECONNREFUSED on the sender.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int udp_to(int port, struct sockaddr_in *dst)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0) {
		perror("flood: socket");
		exit(1);
	}
	memset(dst, 0, sizeof(*dst));
	dst->sin_family = AF_INET;
	dst->sin_port = htons(port);
	dst->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return fd;
}

static int flood(long ms)
{
	struct sockaddr_in dst;
	char payload[16] = "pktfate-peers";
	int fd = udp_to(9, &dst);
	uint64_t start = now_ns(), end = start + (uint64_t)ms * 1000000ull, t;
	unsigned long sent = 0, errors = 0;

	do {
		for (int i = 0; i < 16; i++) {
			if (sendto(fd, payload, sizeof(payload), 0,
				   (struct sockaddr *)&dst, sizeof(dst)) < 0)
				errors++;
			else
				sent++;
		}
		t = now_ns();
	} while (t < end);
	printf("flood sent=%lu errors=%lu ns=%llu\n", sent, errors,
	       (unsigned long long)(t - start));
	return 0;
}

static int probe(long ms, long interval_us, int port, const char *file)
{
	struct sockaddr_in dst;
	char payload[16] = "pktfate-probe";
	int fd = udp_to(port, &dst);
	uint64_t start = now_ns(), end = start + (uint64_t)ms * 1000000ull;
	size_t n = 0, cap = (size_t)(ms * 1000 / interval_us) + 16;
	uint64_t *sent = calloc(cap, sizeof(*sent));
	struct timespec next;
	FILE *out;

	if (!sent) {
		perror("flood: calloc");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (n < cap) {
		uint64_t t = now_ns();

		if (t >= end)
			break;
		/* A probe that fails to send still counts as sent: it never
		 * shows, which the ready time would then overstate by one
		 * interval. Loopback sends do not fail here.
		 */
		(void)sendto(fd, payload, sizeof(payload), 0,
			     (struct sockaddr *)&dst, sizeof(dst));
		sent[n++] = t;
		next.tv_nsec += interval_us * 1000;
		while (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
	out = fopen(file, "w");
	if (!out) {
		perror("flood: writing probe times");
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		fprintf(out, "%llu\n", (unsigned long long)sent[i]);
	fclose(out);
	printf("probe sent=%zu\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2)
		return flood(atol(argv[1]));
	if (argc == 6 && !strcmp(argv[1], "-probe"))
		return probe(atol(argv[2]), atol(argv[3]), atoi(argv[4]), argv[5]);
	fprintf(stderr, "usage: flood MS | flood -probe MS INTERVAL_US PORT FILE\n");
	return 2;
}
