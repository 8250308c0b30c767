/*
 * clu_crypt: every cluster packet and stream frame is sealed with
 * AES-256-GCM under the cluster key, so that only members can read, forge
 * or replay-alter gossip.
 *
 * A keyring holds the primary key, which seals, and any number of other
 * keys, which open too: to rotate, add the new key on every node, make it
 * primary on every node, then remove the old one, with no downtime.
 *
 * A sealed message is: version (1 byte, 1) | nonce (12 random bytes) |
 * ciphertext | tag (16 bytes). The version byte and a purpose label (packet
 * or stream) are authenticated too, so a packet cannot be replayed as a
 * stream frame. Random 96-bit nonces stay safe far beyond the 2^32 messages
 * per key that NIST SP 800-38D allows: rotate keys well before that.
 */
#ifndef CLUSTER_CLU_CRYPT_H
#define CLUSTER_CLU_CRYPT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CLU_KEY_LEN 32
#define CLU_SEAL_OVERHEAD (1 + 12 + 16)
#define CLU_MAX_KEYS 8

enum clu_purpose {
	CLU_PURPOSE_PACKET = 1,      /* a UDP datagram */
	CLU_PURPOSE_STREAM = 2,      /* a frame of a TCP push-pull stream */
};

struct clu_keyring;

/* A keyring whose primary key is key. Returns NULL when out of memory. */
struct clu_keyring *clu_keyring_new(const uint8_t key[CLU_KEY_LEN]);
void clu_keyring_free(struct clu_keyring *kr);

/* Adds a key that opens messages (up to CLU_MAX_KEYS). 0, or -1 when full. */
int clu_keyring_add(struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN]);
/* Makes a key already in the ring the primary one. 0, or -1 when absent. */
int clu_keyring_use(struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN]);
/* Removes a key that is not the primary one. 0, or -1. */
int clu_keyring_remove(struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN]);
unsigned clu_keyring_count(const struct clu_keyring *kr);

/*
 * A key as configured: 32 bytes in base64 (44 characters), as
 * `openssl rand -base64 32` prints. Returns 0, or -1 when it is not that.
 */
int clu_key_parse(const char *base64, uint8_t out[CLU_KEY_LEN]);

/*
 * Seals len bytes of plain into out, which has room for len +
 * CLU_SEAL_OVERHEAD bytes. Returns the sealed length, or -1 (no randomness,
 * or OpenSSL failed).
 */
ssize_t clu_seal(const struct clu_keyring *kr, enum clu_purpose purpose, const uint8_t *plain,
                 size_t len, uint8_t *out);

/*
 * Opens a sealed message into out (room for len - CLU_SEAL_OVERHEAD bytes)
 * with whichever key of the ring sealed it. Returns the plain length, or -1
 * when it is too short, of another version or purpose, or no key opens it.
 */
ssize_t clu_open(const struct clu_keyring *kr, enum clu_purpose purpose, const uint8_t *sealed,
                 size_t len, uint8_t *out);

#endif
