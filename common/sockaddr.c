#include "sockaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

const char *sa_ip(const struct sockaddr_storage *sa, char *buf, size_t len)
{
	const void *raw = sa->ss_family == AF_INET6
	                  ? (const void *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr
	                  : (const void *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	if ((sa->ss_family != AF_INET && sa->ss_family != AF_INET6) ||
	    !inet_ntop(sa->ss_family, raw, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}

const char *sa_str(const struct sockaddr_storage *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	sa_ip(sa, ip, sizeof(ip));
	if (sa->ss_family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip,
		         ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port));
	else
		snprintf(buf, len, "%s:%u", ip,
		         ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port));
	return buf;
}

void sa_set_port(struct sockaddr_storage *sa, uint16_t port)
{
	if (sa->ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)sa)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)(void *)sa)->sin_port = htons(port);
}
