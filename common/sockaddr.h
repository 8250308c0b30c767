/*
 * sockaddr: the few things every module does with a struct sockaddr_storage
 * holding an IPv4 or IPv6 address: print it, set its port.
 */
#ifndef COMMON_SOCKADDR_H
#define COMMON_SOCKADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The address as text into buf ("198.18.0.1", "fd00::1"; "?" for another family). Returns buf. */
const char *sa_ip(const struct sockaddr_storage *sa, char *buf, size_t len);
/* "198.18.0.1:5061" or "[fd00::1]:5061" into buf. Returns buf. */
const char *sa_str(const struct sockaddr_storage *sa, char *buf, size_t len);
/* Sets the port of an IPv4 or IPv6 address (host order in). */
void sa_set_port(struct sockaddr_storage *sa, uint16_t port);

#endif
