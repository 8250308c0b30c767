#include "clu_crypt.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define VERSION 1
#define NONCE_LEN 12
#define TAG_LEN 16

struct clu_keyring {
	uint8_t keys[CLU_MAX_KEYS][CLU_KEY_LEN];  /* keys[0] is the primary */
	unsigned nkeys;
	EVP_CIPHER_CTX *ctx;                       /* reused: its key is set per call */
};

struct clu_keyring *clu_keyring_new(const uint8_t key[CLU_KEY_LEN])
{
	struct clu_keyring *kr = calloc(1, sizeof(*kr));
	if (!kr)
		return NULL;
	kr->ctx = EVP_CIPHER_CTX_new();
	if (!kr->ctx) {
		free(kr);
		return NULL;
	}
	memcpy(kr->keys[0], key, CLU_KEY_LEN);
	kr->nkeys = 1;
	return kr;
}

void clu_keyring_free(struct clu_keyring *kr)
{
	if (!kr)
		return;
	EVP_CIPHER_CTX_free(kr->ctx);
	OPENSSL_cleanse(kr->keys, sizeof(kr->keys));
	free(kr);
}

static int find(const struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN])
{
	for (unsigned i = 0; i < kr->nkeys; i++)
		if (memcmp(kr->keys[i], key, CLU_KEY_LEN) == 0)
			return (int)i;
	return -1;
}

int clu_keyring_add(struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN])
{
	if (find(kr, key) >= 0)
		return 0;
	if (kr->nkeys == CLU_MAX_KEYS)
		return -1;
	memcpy(kr->keys[kr->nkeys++], key, CLU_KEY_LEN);
	return 0;
}

int clu_keyring_use(struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN])
{
	int i = find(kr, key);
	if (i < 0)
		return -1;
	uint8_t tmp[CLU_KEY_LEN];
	memcpy(tmp, kr->keys[0], CLU_KEY_LEN);
	memcpy(kr->keys[0], kr->keys[i], CLU_KEY_LEN);
	memcpy(kr->keys[i], tmp, CLU_KEY_LEN);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return 0;
}

int clu_keyring_remove(struct clu_keyring *kr, const uint8_t key[CLU_KEY_LEN])
{
	int i = find(kr, key);
	if (i <= 0)
		return -1; /* absent, or the primary */
	memmove(kr->keys[i], kr->keys[i + 1], (kr->nkeys - (unsigned)i - 1) * CLU_KEY_LEN);
	kr->nkeys--;
	OPENSSL_cleanse(kr->keys[kr->nkeys], CLU_KEY_LEN);
	return 0;
}

unsigned clu_keyring_count(const struct clu_keyring *kr)
{
	return kr->nkeys;
}

int clu_key_parse(const char *base64, uint8_t out[CLU_KEY_LEN])
{
	uint8_t buf[48];
	size_t len = strlen(base64);
	/* 32 bytes are 44 characters with one '=' of padding; nothing else. */
	if (len != 44 || base64[43] != '=' || base64[42] == '=')
		return -1;
	if (EVP_DecodeBlock(buf, (const unsigned char *)base64, (int)len) != 33)
		return -1; /* EVP_DecodeBlock counts the padding as a zero byte */
	memcpy(out, buf, CLU_KEY_LEN);
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

/* The authenticated data: the version byte and the purpose. */
static int set_aad(EVP_CIPHER_CTX *ctx, enum clu_purpose purpose, int encrypt)
{
	uint8_t aad[2] = { VERSION, (uint8_t)purpose };
	int n;
	return encrypt ? EVP_EncryptUpdate(ctx, NULL, &n, aad, sizeof(aad))
	               : EVP_DecryptUpdate(ctx, NULL, &n, aad, sizeof(aad));
}

ssize_t clu_seal(const struct clu_keyring *kr, enum clu_purpose purpose, const uint8_t *plain,
                 size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = kr->ctx;
	uint8_t *nonce = out + 1, *body = out + 1 + NONCE_LEN;
	int n, fin;
	if (len > (size_t)INT32_MAX - CLU_SEAL_OVERHEAD || RAND_bytes(nonce, NONCE_LEN) != 1)
		return -1;
	out[0] = VERSION;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, kr->keys[0], nonce) != 1 ||
	    set_aad(ctx, purpose, 1) != 1 ||
	    EVP_EncryptUpdate(ctx, body, &n, plain, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, body + n, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, body + len) != 1)
		return -1;
	return (ssize_t)(len + CLU_SEAL_OVERHEAD);
}

ssize_t clu_open(const struct clu_keyring *kr, enum clu_purpose purpose, const uint8_t *sealed,
                 size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = kr->ctx;
	if (len < CLU_SEAL_OVERHEAD || len > (size_t)INT32_MAX || sealed[0] != VERSION)
		return -1;
	const uint8_t *nonce = sealed + 1, *body = sealed + 1 + NONCE_LEN;
	size_t blen = len - CLU_SEAL_OVERHEAD;
	/* The primary key first: during a rotation the others are rare. */
	for (unsigned k = 0; k < kr->nkeys; k++) {
		int n, fin;
		if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, kr->keys[k], nonce) == 1 &&
		    set_aad(ctx, purpose, 0) == 1 &&
		    EVP_DecryptUpdate(ctx, out, &n, body, (int)blen) == 1 &&
		    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(body + blen)) == 1 &&
		    EVP_DecryptFinal_ex(ctx, out + n, &fin) == 1)
			return (ssize_t)blen;
	}
	/* Nothing of a failed attempt may be mistaken for plain text. */
	OPENSSL_cleanse(out, blen);
	return -1;
}
