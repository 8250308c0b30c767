/* Unit tests for cluster/clu_crypt.c: sealing, opening, key rotation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "clu_crypt.h"

static const uint8_t K1[CLU_KEY_LEN] = { 1 }, K2[CLU_KEY_LEN] = { 2 }, K3[CLU_KEY_LEN] = { 3 };
static const uint8_t MSG[] = "alive node-1 incarnation 7";

static ssize_t seal(const struct clu_keyring *kr, enum clu_purpose p, uint8_t *out)
{
	return clu_seal(kr, p, MSG, sizeof(MSG), out);
}

static void test_round_trip(void **state)
{
	struct clu_keyring *kr = clu_keyring_new(K1);
	uint8_t sealed[sizeof(MSG) + CLU_SEAL_OVERHEAD], plain[sizeof(MSG)];
	assert_int_equal(seal(kr, CLU_PURPOSE_PACKET, sealed), sizeof(sealed));
	assert_int_equal(sealed[0], 1);
	assert_null(memmem(sealed, sizeof(sealed), "alive", 5)); /* not in the clear */
	assert_int_equal(clu_open(kr, CLU_PURPOSE_PACKET, sealed, sizeof(sealed), plain), sizeof(MSG));
	assert_memory_equal(plain, MSG, sizeof(MSG));
	/* Two seals of the same text differ: a fresh nonce each time. */
	uint8_t again[sizeof(sealed)];
	seal(kr, CLU_PURPOSE_PACKET, again);
	assert_memory_not_equal(again, sealed, sizeof(sealed));
	/* An empty message seals too. */
	assert_int_equal(clu_seal(kr, CLU_PURPOSE_STREAM, MSG, 0, again), CLU_SEAL_OVERHEAD);
	assert_int_equal(clu_open(kr, CLU_PURPOSE_STREAM, again, CLU_SEAL_OVERHEAD, plain), 0);
	clu_keyring_free(kr);
}

static void test_every_flipped_bit_is_refused(void **state)
{
	struct clu_keyring *kr = clu_keyring_new(K1);
	uint8_t sealed[sizeof(MSG) + CLU_SEAL_OVERHEAD], plain[sizeof(MSG)];
	seal(kr, CLU_PURPOSE_PACKET, sealed);
	for (size_t i = 0; i < sizeof(sealed); i++)
		for (int bit = 0; bit < 8; bit++) {
			sealed[i] ^= (uint8_t)(1 << bit);
			assert_int_equal(clu_open(kr, CLU_PURPOSE_PACKET, sealed, sizeof(sealed), plain), -1);
			sealed[i] ^= (uint8_t)(1 << bit);
		}
	/* Truncated, or too short to hold the overhead. */
	for (size_t len = 0; len < sizeof(sealed); len++)
		assert_int_equal(clu_open(kr, CLU_PURPOSE_PACKET, sealed, len, plain), -1);
	clu_keyring_free(kr);
}

static void test_purpose_and_key_bind(void **state)
{
	struct clu_keyring *kr = clu_keyring_new(K1), *other = clu_keyring_new(K2);
	uint8_t sealed[sizeof(MSG) + CLU_SEAL_OVERHEAD], plain[sizeof(MSG)];
	seal(kr, CLU_PURPOSE_PACKET, sealed);
	/* A packet is not a stream frame, and another cluster's key opens nothing. */
	assert_int_equal(clu_open(kr, CLU_PURPOSE_STREAM, sealed, sizeof(sealed), plain), -1);
	assert_int_equal(clu_open(other, CLU_PURPOSE_PACKET, sealed, sizeof(sealed), plain), -1);
	clu_keyring_free(kr);
	clu_keyring_free(other);
}

/* Rotation: K1 -> K2 across two nodes, with no moment where they cannot talk. */
static void test_rotation(void **state)
{
	struct clu_keyring *a = clu_keyring_new(K1), *b = clu_keyring_new(K1);
	uint8_t sealed[sizeof(MSG) + CLU_SEAL_OVERHEAD], plain[sizeof(MSG)];
	/* 1. Both accept K2. */
	assert_int_equal(clu_keyring_add(a, K2), 0);
	assert_int_equal(clu_keyring_add(b, K2), 0);
	assert_int_equal(clu_keyring_add(b, K2), 0); /* twice is once */
	assert_int_equal(clu_keyring_count(b), 2);
	/* 2. a switches first: b still opens it. */
	assert_int_equal(clu_keyring_use(a, K2), 0);
	seal(a, CLU_PURPOSE_PACKET, sealed);
	assert_int_equal(clu_open(b, CLU_PURPOSE_PACKET, sealed, sizeof(sealed), plain), sizeof(MSG));
	seal(b, CLU_PURPOSE_PACKET, sealed);
	assert_int_equal(clu_open(a, CLU_PURPOSE_PACKET, sealed, sizeof(sealed), plain), sizeof(MSG));
	/* 3. b switches, both drop K1: a K1 message is refused from then on. */
	struct clu_keyring *old = clu_keyring_new(K1);
	assert_int_equal(clu_keyring_use(b, K2), 0);
	assert_int_equal(clu_keyring_remove(a, K1), 0);
	assert_int_equal(clu_keyring_remove(b, K1), 0);
	seal(old, CLU_PURPOSE_PACKET, sealed);
	assert_int_equal(clu_open(a, CLU_PURPOSE_PACKET, sealed, sizeof(sealed), plain), -1);
	/* The primary cannot be removed; an absent key cannot be used. */
	assert_int_equal(clu_keyring_remove(a, K2), -1);
	assert_int_equal(clu_keyring_use(a, K3), -1);
	clu_keyring_free(a);
	clu_keyring_free(b);
	clu_keyring_free(old);
}

static void test_ring_is_bounded(void **state)
{
	struct clu_keyring *kr = clu_keyring_new(K1);
	uint8_t k[CLU_KEY_LEN] = { 0 };
	for (unsigned i = 1; i < CLU_MAX_KEYS; i++) {
		k[1] = (uint8_t)i;
		assert_int_equal(clu_keyring_add(kr, k), 0);
	}
	k[1] = 200;
	assert_int_equal(clu_keyring_add(kr, k), -1);
	assert_int_equal(clu_keyring_count(kr), CLU_MAX_KEYS);
	clu_keyring_free(kr);
}

static void test_key_parse(void **state)
{
	uint8_t key[CLU_KEY_LEN];
	/* 32 bytes 0x00..0x1f */
	assert_int_equal(clu_key_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", key), 0);
	for (unsigned i = 0; i < CLU_KEY_LEN; i++)
		assert_int_equal(key[i], i);
	assert_int_equal(clu_key_parse("", key), -1);
	assert_int_equal(clu_key_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", key), -1);
	assert_int_equal(clu_key_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", key), -1); /* 31 */
	assert_int_equal(clu_key_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH!8=", key), -1);
	assert_int_equal(clu_key_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=AAAA", key), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_every_flipped_bit_is_refused),
		cmocka_unit_test(test_purpose_and_key_bind),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_ring_is_bounded),
		cmocka_unit_test(test_key_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
