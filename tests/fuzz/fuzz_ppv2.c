/* libFuzzer driver for common/ppv2.c: parse stays within len, prefixes wait, PROXY builds back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ppv2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1), out[PPV2_MAX_LEN]; /* exactly size: ASan sees overreads */
	struct ppv2_header h, again;
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	int rc = ppv2_parse(buf, size, &h);
	if (rc > (int)size || rc > PPV2_MAX_LEN || (rc > 0 && ppv2_wanted(buf, size) != (size_t)rc))
		abort();
	for (size_t n = 0; rc > 0 && n < (size_t)rc; n += 1 + n / 8)
		if (ppv2_parse(buf, n, &again) != 0) /* a prefix of a valid header only waits */
			abort();
	size_t n = rc > 0 && h.command == PPV2_PROXY
	         ? ppv2_build(out, sizeof(out), (struct sockaddr *)&h.src, (struct sockaddr *)&h.dst) : 1;
	if (n == 0 || (n > 1 && (ppv2_parse(out, n, &again) != (int)n ||
	                         memcmp(&again.src, &h.src, h.srclen) || memcmp(&again.dst, &h.dst, h.dstlen))))
		abort();
	free(buf); buf = NULL;
	return 0;
}
