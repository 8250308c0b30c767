/*
 * list: an intrusive, circular, doubly linked list (as the Linux kernel's).
 * An element embeds a struct list_node; an all-zero node is "not linked".
 */
#ifndef COMMON_LIST_H
#define COMMON_LIST_H

#include <stddef.h>

struct list_node {
	struct list_node *next, *prev;
};

#define list_entry(node, type, member) \
	((type *)(void *)((char *)(node) - offsetof(type, member)))

static inline void list_init(struct list_node *head)
{
	head->next = head->prev = head;
}

static inline int list_empty(const struct list_node *head)
{
	return head->next == head;
}

static inline int list_linked(const struct list_node *n)
{
	return n->next != NULL && n->next != n;
}

static inline void list_add_tail(struct list_node *head, struct list_node *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void list_del(struct list_node *n)
{
	if (n->next) {
		n->next->prev = n->prev;
		n->prev->next = n->next;
	}
	n->next = n->prev = NULL;
}

/* Safe against removal of the current node. */
#define list_for_each_safe(pos, tmp, head) \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif
