// SPDX-License-Identifier: Apache-2.0
/* rr: TCP request/response and connect/request/response/close rates, netperf's TCP_RR/TCP_CRR.
 *
 *   rr server PORT                 echo every byte received; one connection at a time
 *   rr client HOST PORT SECONDS    one connection, 1-byte request, 1-byte response, repeated
 *   rr crr HOST PORT SECONDS       connect, 1-byte request and response, close with a reset
 *
 * The clients print one JSON line: {"mode", "transactions", "seconds", "rate"} where rate is
 * transactions per second. The crr client closes with SO_LINGER {1, 0}, so the connection
 * ends in a reset and neither side keeps a TIME_WAIT socket (ports are reused at once).
 * Built by the benchmark fixture (bench/test_bridge_bench.py) with `cc -O2`; errors go to
 * stderr and exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define SERVER_IDLE_S 30 /* a connection silent this long is dropped, so no client wedges it */
#define LISTEN_BACKLOG 128

static void die(const char *what)
{
	fprintf(stderr, "rr: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_int(int fd, int level, int name, int value, const char *what)
{
	if (setsockopt(fd, level, name, &value, sizeof(value)) < 0)
		die(what);
}

static __attribute__((noreturn)) void serve(const char *port)
{
	struct sockaddr_in6 addr6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
	struct sockaddr_in addr4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	struct timeval idle = { .tv_sec = SERVER_IDLE_S };
	unsigned short nport = htons((unsigned short)atoi(port));
	char buf[4096];
	int lfd, fd;
	ssize_t n;

	addr6.sin6_port = addr4.sin_port = nport;
	lfd = socket(AF_INET6, SOCK_STREAM, 0); /* dual stack: IPv4 clients too */
	if (lfd >= 0) {
		set_int(lfd, IPPROTO_IPV6, IPV6_V6ONLY, 0, "setsockopt IPV6_V6ONLY");
		set_int(lfd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt SO_REUSEADDR");
		if (bind(lfd, (struct sockaddr *)&addr6, sizeof(addr6)) < 0)
			die("bind");
	} else if (errno == EAFNOSUPPORT) { /* IPv6 disabled: IPv4 only */
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		if (lfd < 0)
			die("socket");
		set_int(lfd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt SO_REUSEADDR");
		if (bind(lfd, (struct sockaddr *)&addr4, sizeof(addr4)) < 0)
			die("bind");
	} else {
		die("socket");
	}
	if (listen(lfd, LISTEN_BACKLOG) < 0)
		die("listen");
	for (;;) {
		fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1, "setsockopt TCP_NODELAY");
		if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle)) < 0)
			die("setsockopt SO_RCVTIMEO");
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write(fd, buf, (size_t)n) != n)
				break;
		close(fd); /* EOF, reset (crr) or idle timeout */
	}
}

static struct addrinfo *resolve(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
	struct addrinfo *ai;
	int err;

	err = getaddrinfo(host, port, &hints, &ai);
	if (err) {
		fprintf(stderr, "rr: resolve %s port %s: %s\n", host, port, gai_strerror(err));
		exit(1);
	}
	return ai;
}

static int dial(const struct addrinfo *ai, int reset_on_close)
{
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	int fd;

	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1, "setsockopt TCP_NODELAY");
	if (reset_on_close && setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) < 0)
		die("setsockopt SO_LINGER");
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		die("connect");
	return fd;
}

static void transact(int fd)
{
	char c = 'x';
	ssize_t n;

	if (write(fd, &c, 1) != 1)
		die("write request");
	n = read(fd, &c, 1);
	if (n < 0)
		die("read response");
	if (n == 0) {
		fprintf(stderr, "rr: read response: connection closed by the server\n");
		exit(1);
	}
}

static int client(const char *mode, const char *host, const char *port, const char *seconds)
{
	int crr = strcmp(mode, "crr") == 0;
	double duration = atof(seconds), start, end;
	struct addrinfo *ai = resolve(host, port);
	unsigned long long count = 0;
	int fd = -1;

	if (duration <= 0) {
		fprintf(stderr, "rr: SECONDS: expected a positive number, got \"%s\"\n", seconds);
		return 2;
	}
	if (!crr)
		fd = dial(ai, 0);
	start = now_s();
	end = start + duration;
	do {
		if (crr)
			fd = dial(ai, 1);
		transact(fd);
		if (crr)
			close(fd); /* SO_LINGER {1, 0}: a reset, no TIME_WAIT */
		count++;
	} while (now_s() < end);
	duration = now_s() - start;
	if (!crr)
		close(fd);
	freeaddrinfo(ai);
	printf("{\"mode\": \"%s\", \"transactions\": %llu, \"seconds\": %.6f, \"rate\": %.1f}\n",
	       crr ? "crr" : "rr", count, duration, (double)count / duration);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && strcmp(argv[1], "server") == 0)
		serve(argv[2]);
	if (argc == 5 && (strcmp(argv[1], "client") == 0 || strcmp(argv[1], "crr") == 0))
		return client(argv[1], argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: rr server PORT\n"
			"       rr client HOST PORT SECONDS\n"
			"       rr crr HOST PORT SECONDS\n");
	return 2;
}
