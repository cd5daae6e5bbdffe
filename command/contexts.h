/*
 * The bounded contexts' commands, and the table that names them for the
 * NATS subjects cmd.<context>.<action> and the HTTP routes.
 */
#ifndef ES_CONTEXTS_H
#define ES_CONTEXTS_H

#include "cmd.h"

void user_register(cmd_env *, const char *, bool, json_t *, cmd_out *);
void user_verify(cmd_env *, const char *, bool, json_t *, cmd_out *);
void user_reject(cmd_env *, const char *, bool, json_t *, cmd_out *);
void profile_create(cmd_env *, const char *, bool, json_t *, cmd_out *);
void profile_delete(cmd_env *, const char *, bool, json_t *, cmd_out *);
void fraud_check(cmd_env *, const char *, bool, json_t *, cmd_out *);
void order_place(cmd_env *, const char *, bool, json_t *, cmd_out *);
void order_confirm(cmd_env *, const char *, bool, json_t *, cmd_out *);
void order_cancel(cmd_env *, const char *, bool, json_t *, cmd_out *);
void order_fail(cmd_env *, const char *, bool, json_t *, cmd_out *);
void payment_deposit(cmd_env *, const char *, bool, json_t *, cmd_out *);
void payment_charge(cmd_env *, const char *, bool, json_t *, cmd_out *);
void payment_refund(cmd_env *, const char *, bool, json_t *, cmd_out *);
void inventory_restock(cmd_env *, const char *, bool, json_t *, cmd_out *);
void inventory_reserve(cmd_env *, const char *, bool, json_t *, cmd_out *);
void inventory_release(cmd_env *, const char *, bool, json_t *, cmd_out *);
void shipping_create(cmd_env *, const char *, bool, json_t *, cmd_out *);
void shipping_cancel(cmd_env *, const char *, bool, json_t *, cmd_out *);
void notify_notification(cmd_env *, const char *, bool, json_t *, cmd_out *);
void notify_email(cmd_env *, const char *, bool, json_t *, cmd_out *);
void notify_analytics(cmd_env *, const char *, bool, json_t *, cmd_out *);

/*
 * Decodes an order's "items" (1..100 lines of sku, quantity, unit_price)
 * into *items (new, clean copies) and their *total in minor units,
 * refusing overflow.  false with out set when they are not valid.
 */
bool order_decode_items(const json_t *in, json_t **items, json_int_t *total, cmd_out *out);

typedef struct cmd_def {
    const char *name;           /* "<context>.<action>": subject cmd.<name> */
    cmd_fn fn;
} cmd_def;

/* Every command, NULL-terminated. */
extern const cmd_def cmd_table[];

/* The command called name, or NULL. */
const cmd_def *cmd_find(const char *name);

#endif
