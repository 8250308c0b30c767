/*
 * clu_msg: the cluster's messages (proto/cluster.proto, C by protoc-c),
 * decoded and checked before anything uses them.
 *
 * A decoded message that passes the checks has: version >= 1; node names
 * that clu_name_valid() accepts; addresses of 4 or 16 bytes and a port;
 * bounded counts of gossip items, members, records and metadata; record
 * keys and values within their limits, tombstones without a value. What a
 * newer version adds (unknown fields, a oneof member this version does not
 * know, an unknown member state) is skipped, not refused.
 */
#ifndef CLUSTER_CLU_MSG_H
#define CLUSTER_CLU_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.pb-c.h"

typedef Edgepool__Cluster__V1__Packet clu_packet;
typedef Edgepool__Cluster__V1__Frame clu_frame;
typedef Edgepool__Cluster__V1__Gossip clu_gossip;
typedef Edgepool__Cluster__V1__Record clu_record;
typedef Edgepool__Cluster__V1__Member clu_member_msg;
typedef Edgepool__Cluster__V1__Address clu_address;

#define CLU_PROTO_VERSION 1
#define CLU_NAME_MAX 255           /* a node name */
#define CLU_KEY_MAX 512            /* a record key */
#define CLU_VALUE_MAX (64 * 1024)  /* a record value */
#define CLU_GOSSIP_MAX 256         /* items in one packet */
#define CLU_META_MAX 16            /* metadata entries of a node */
#define CLU_META_LEN_MAX 256       /* a metadata key or value */
#define CLU_MEMBERS_MAX 4096       /* members in a push-pull header */
#define CLU_BATCH_MAX 4096         /* records in one batch */
#define CLU_BUCKETS_MAX 65536      /* digest buckets */
#define CLU_PACKET_MAX 65507       /* a UDP payload, sealed */
#define CLU_FRAME_MAX (4 << 20)    /* a stream frame, sealed */

/* Letters, digits, '.', '-' and '_', 1 to CLU_NAME_MAX bytes. */
int clu_name_valid(const char *name);

/*
 * Decodes len bytes (already opened, clu_crypt.h) and checks them. Returns
 * the message, which the caller frees with clu_packet_free() or
 * clu_frame_free(), or NULL with the reason in why.
 */
clu_packet *clu_packet_decode(const uint8_t *buf, size_t len, char *why, size_t whylen);
void clu_packet_free(clu_packet *p);
clu_frame *clu_frame_decode(const uint8_t *buf, size_t len, char *why, size_t whylen);
void clu_frame_free(clu_frame *f);

#endif
