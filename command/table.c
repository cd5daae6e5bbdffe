/*
 * The command table: every command by its name "<context>.<action>",
 * which is also its NATS subject after "cmd.".
 */
#include <string.h>

#include "contexts.h"

const cmd_def cmd_table[] = {
    {"user.register", user_register},
    {"user.verify", user_verify},
    {"user.reject", user_reject},
    {"profile.create", profile_create},
    {"profile.delete", profile_delete},
    {"fraud.check", fraud_check},
    {"order.place", order_place},
    {"order.confirm", order_confirm},
    {"order.cancel", order_cancel},
    {"order.fail", order_fail},
    {"payment.deposit", payment_deposit},
    {"payment.charge", payment_charge},
    {"payment.refund", payment_refund},
    {"inventory.restock", inventory_restock},
    {"inventory.reserve", inventory_reserve},
    {"inventory.release", inventory_release},
    {"shipping.create", shipping_create},
    {"shipping.cancel", shipping_cancel},
    {"notification.send", notify_notification},
    {"email.send", notify_email},
    {"analytics.record", notify_analytics},
    {NULL, NULL},
};

const cmd_def *
cmd_find(const char *name)
{
    for (const cmd_def *d = cmd_table; d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}
