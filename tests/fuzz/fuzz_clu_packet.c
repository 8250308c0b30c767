/* libFuzzer driver for the cluster's receive path: open (clu_crypt), decode and check (clu_msg). */
#include <stdint.h>
#include <stdlib.h>

#include "clu_crypt.h"
#include "clu_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t KEY[CLU_KEY_LEN] = { 7 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct clu_keyring *kr;
	char why[200];

	/* What arrives is first opened: garbage must fail there, without harm. */
	if (!kr && !(kr = clu_keyring_new(KEY)))
		abort();
	uint8_t *plain = malloc(size ? size : 1);
	if (!plain)
		abort();
	if (clu_open(kr, CLU_PURPOSE_PACKET, data, size, plain) >= 0)
		abort(); /* forging a tag by chance: never */
	free(plain);

	/* What opened is decoded and checked, as a packet or as a stream frame. */
	clu_packet_free(clu_packet_decode(data, size, why, sizeof(why)));
	clu_frame_free(clu_frame_decode(data, size, why, sizeof(why)));
	return 0;
}
