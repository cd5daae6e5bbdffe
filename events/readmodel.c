/*
 * Read models in Redis: batches of per-event commands applied atomically
 * with a checkpoint by a Lua script, the versions' bookkeeping and
 * switching, stop reports, the rebuild lock, notices, and reads pinned to
 * one version.  This is the only file that spells a key of the layout
 * drawn in readmodel.h, and the one place a Redis error reply is read and
 * classified (reply_transient()).
 */
#include "readmodel.h"
#include "core_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "env.h"
#include "uuid.h"

/*
 * ARGV: name, version ("" = active), lease ("" = unfenced), then per
 * event: seq, position, the number of commands, then per command: argc,
 * command, key, args...  With a lease, the batch runs only while
 * rm:<name>:lease holds exactly that value (the fencing check is in the
 * same script as the writes, so no write of a deposed holder lands);
 * else it fails with "FENCED <holder>" and writes nothing.
 * Returns {version, checkpoint seq, checkpoint position, applied, gap,
 * failed seq, error, partial}.  Redis does not undo a script's writes
 * when a command fails, so a failing command ends the batch there: the
 * checkpoint stays before that event and the caller is told which event
 * failed, why, and whether some of its commands were applied (partial).
 */
static const char APPLY_LUA[] =
    "local base = 'rm:' .. ARGV[1] .. ':'\n"
    "if ARGV[3] ~= '' then\n"
    "  local holder = redis.call('GET', base .. 'lease')\n"
    "  if holder ~= ARGV[3] then\n"
    "    return redis.error_reply('FENCED ' .. (holder or 'none'))\n"
    "  end\n"
    "end\n"
    "local ver = ARGV[2]\n"
    "if ver == '' then\n"
    "  ver = redis.call('GET', base .. 'active')\n"
    "  if not ver then ver = '1'; redis.call('SET', base .. 'active', ver) end\n"
    "end\n"
    "local p = base .. ver .. ':'\n"
    "local cpk = p .. 'checkpoint'\n"
    "local cp = tonumber(redis.call('HGET', cpk, 'seq') or '0')\n"
    "local pos = nil\n"
    "local i, n, applied, gap = 4, #ARGV, 0, 0\n"
    "local failed, why, partial = 0, '', 0\n"
    "while i <= n do\n"
    "  local seq = tonumber(ARGV[i])\n"
    "  if seq > cp + 1 then gap = 1; break end\n"
    "  local apply = seq == cp + 1\n"
    "  local ncmd = tonumber(ARGV[i + 2])\n"
    "  local epos = ARGV[i + 1]\n"
    "  i = i + 3\n"
    "  for c = 1, ncmd do\n"
    "    local argc = tonumber(ARGV[i])\n"
    "    if apply then\n"
    "      local r = redis.pcall(ARGV[i + 1], p .. ARGV[i + 2], unpack(ARGV, i + 3, i + argc))\n"
    "      if type(r) == 'table' and r.err then\n"
    "        failed = seq; why = r.err; if c > 1 then partial = 1 end; break\n"
    "      end\n"
    "    end\n"
    "    i = i + 1 + argc\n"
    "  end\n"
    "  if failed ~= 0 then break end\n"
    "  if apply then cp = seq; pos = epos; applied = applied + 1 end\n"
    "end\n"
    "if applied > 0 then\n"
    "  redis.call('HSET', cpk, 'seq', cp, 'position', pos)\n"
    "  redis.call('PUBLISH', base .. 'applied', ver .. ' ' .. cp .. ' ' .. pos)\n"
    "else\n"
    "  pos = redis.call('HGET', cpk, 'position') or ''\n"
    "end\n"
    "return {ver, cp, pos, applied, gap, failed, why, partial}\n";

/* ARGV: name, version.  Returns {switched, old version, old seq, new seq}. */
static const char SWITCH_LUA[] =
    "local base = 'rm:' .. ARGV[1] .. ':'\n"
    "local old = redis.call('GET', base .. 'active')\n"
    "local ncp = tonumber(redis.call('HGET', base .. ARGV[2] .. ':checkpoint', 'seq') or '0')\n"
    "local ocp = 0\n"
    "if old then ocp = tonumber(redis.call('HGET', base .. old .. ':checkpoint', 'seq') or '0') end\n"
    "if ncp < ocp then return {0, old or '', ocp, ncp} end\n"
    "redis.call('SET', base .. 'active', ARGV[2])\n"
    "redis.call('DEL', base .. 'building')\n"
    "if old and old ~= ARGV[2] then redis.call('SADD', base .. 'retired', old) end\n"
    "local pos = redis.call('HGET', base .. ARGV[2] .. ':checkpoint', 'position') or ''\n"
    "redis.call('PUBLISH', base .. 'applied', ARGV[2] .. ' ' .. ncp .. ' ' .. pos)\n"
    "return {1, old or '', ocp, ncp}\n";

/* ARGV: name, version ("" = active), then per command: argc, command, key,
 * args.  Returns {version, seq, position, reply...}. */
static const char READ_LUA[] =
    "local base = 'rm:' .. ARGV[1] .. ':'\n"
    "local ver = ARGV[2]\n"
    "if ver == '' then ver = redis.call('GET', base .. 'active') or '' end\n"
    "local out = {ver, 0, ''}\n"
    "if ver == '' then return out end\n"
    "local p = base .. ver .. ':'\n"
    "local cp = redis.call('HMGET', p .. 'checkpoint', 'seq', 'position')\n"
    "out[2] = tonumber(cp[1] or '0')\n"
    "out[3] = cp[2] or ''\n"
    "local i, n = 3, #ARGV\n"
    "while i <= n do\n"
    "  local argc = tonumber(ARGV[i])\n"
    "  out[#out + 1] = redis.call(ARGV[i + 1], p .. ARGV[i + 2], unpack(ARGV, i + 3, i + argc))\n"
    "  i = i + 1 + argc\n"
    "end\n"
    "return out\n";

/* ARGV: name.  Numbers a new version above every one used so far and
 * above the active one; "1" is the live projector's, so at least 2. */
static const char NEXT_LUA[] =
    "local base = 'rm:' .. ARGV[1] .. ':'\n"
    "local v = redis.call('INCR', base .. 'next')\n"
    "local a = tonumber(redis.call('GET', base .. 'active') or '0') or 0\n"
    "if v <= a then v = a + 1 end\n"
    "if v < 2 then v = 2 end\n"
    "redis.call('SET', base .. 'next', v)\n"
    "return v\n";

/* The rebuild lock's lease, renewed as the rebuild goes. */
#define LEASE_MS "30000"

/* ARGV: name, token.  1 when the token's holder still had the lock and
 * its lease is renewed (RENEW) or the lock is released (RELEASE). */
static const char RENEW_LUA[] =
    "local k = 'rm:' .. ARGV[1] .. ':rebuilding'\n"
    "if redis.call('GET', k) ~= ARGV[2] then return 0 end\n"
    "return redis.call('PEXPIRE', k, " LEASE_MS ")\n";

static const char RELEASE_LUA[] =
    "local k = 'rm:' .. ARGV[1] .. ':rebuilding'\n"
    "if redis.call('GET', k) ~= ARGV[2] then return 0 end\n"
    "return redis.call('DEL', k)\n";

/*
 * ARGV: name, token ("" for none), instance, lease ms, waited ("1" when
 * the caller saw the lease free in its previous call).  The projector's
 * lease on projection name: rm:<name>:lease = "<epoch> <instance>", with
 * a TTL.  Every call also records instance as a live candidate for the
 * projection (zset rm:<name>:candidates, scored by when it expires, on
 * Redis' clock); the preferred owner is the live candidate with the
 * highest SHA-1 of "<name>\n<instance>" (rendezvous hashing), which
 * spreads the projections over the instances and moves few when one
 * comes or goes.  Returns {outcome, value}:
 *   1 renewed: token holds it and is the preferred owner (or no
 *     preferred one is alive), its TTL is ms again; value = token
 *   3 handed over: token held it, but another live candidate is
 *     preferred: the lease is dropped for it; value = that candidate
 *   2 taken: it was free and the caller is preferred, or waited; value
 *     = the new token, under the next epoch of rm:<name>:lease_epoch
 *   4 free, left for the preferred candidate; value = that candidate
 *   0 someone else holds it; value = the holder
 */
static const char LEASE_LUA[] =
    "local base = 'rm:' .. ARGV[1] .. ':'\n"
    "local k, ck = base .. 'lease', base .. 'candidates'\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)\n"
    "redis.call('ZADD', ck, now + tonumber(ARGV[4]), ARGV[3])\n"
    "local best, bh = ARGV[3], nil\n"
    "for _, c in ipairs(redis.call('ZRANGE', ck, 0, -1)) do\n"
    "  local h = redis.sha1hex(ARGV[1] .. '\\n' .. c)\n"
    "  if not bh or h > bh then best, bh = c, h end\n"
    "end\n"
    "local cur = redis.call('GET', k)\n"
    "if cur and cur == ARGV[2] then\n"
    "  if best ~= ARGV[3] then redis.call('DEL', k); return {3, best} end\n"
    "  redis.call('PEXPIRE', k, ARGV[4])\n"
    "  return {1, cur}\n"
    "end\n"
    "if cur then return {0, cur} end\n"
    "if best ~= ARGV[3] and ARGV[5] ~= '1' then return {4, best} end\n"
    "local e = redis.call('INCR', base .. 'lease_epoch')\n"
    "local v = e .. ' ' .. ARGV[3]\n"
    "redis.call('SET', k, v, 'PX', ARGV[4])\n"
    "return {2, v}\n";

/* ARGV: name, token.  Drops the lease if token holds it. */
static const char UNLEASE_LUA[] =
    "local k = 'rm:' .. ARGV[1] .. ':lease'\n"
    "if redis.call('GET', k) ~= ARGV[2] then return 0 end\n"
    "return redis.call('DEL', k)\n";

typedef struct script {
    const char *text;
    char sha[41];
} script;

static script APPLY = {APPLY_LUA, ""}, SWITCH = {SWITCH_LUA, ""}, READ = {READ_LUA, ""},
              NEXT = {NEXT_LUA, ""}, RENEW = {RENEW_LUA, ""}, RELEASE = {RELEASE_LUA, ""},
              LEASE = {LEASE_LUA, ""}, UNLEASE = {UNLEASE_LUA, ""};

static pthread_once_t shas_once = PTHREAD_ONCE_INIT;

static void
compute_shas(void)
{
    script *all[] = {&APPLY, &SWITCH, &READ, &NEXT, &RENEW, &RELEASE, &LEASE, &UNLEASE};
    size_t k;
    int i;

    for (k = 0; k < sizeof all / sizeof all[0]; k++) {
        unsigned char d[20];

        es__sha1(all[k]->text, strlen(all[k]->text), d);
        for (i = 0; i < 20; i++)
            snprintf(all[k]->sha + 2 * i, 3, "%02x", d[i]);
    }
}

static const char *
sha_of(script *s)
{
    pthread_once(&shas_once, compute_shas);
    return s->sha;
}

/*
 * True for a Redis error reply whose first word, Redis' own machine code,
 * names a condition that passes: out of memory (OOM), a failed save
 * (MISCONF), a replica or a loading server (READONLY, LOADING,
 * MASTERDOWN), a busy script (BUSY), a cluster in flux (TRYAGAIN,
 * CLUSTERDOWN, NOREPLICAS).  Anything else (WRONGTYPE, ERR, a script's own
 * error) is a refusal: the same request would fail again.  Errors raised
 * inside a script keep the code of the command that failed.
 */
static bool
reply_transient(const char *text)
{
    static const char *const codes[] = {"OOM",     "MISCONF",    "READONLY",   "BUSY",
                                        "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN",
                                        "CLUSTERDOWN"};
    size_t i, len = strcspn(text, " ");

    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strlen(codes[i]) == len && strncmp(text, codes[i], len) == 0)
            return true;
    return false;
}

/*
 * Records why a command failed: ES_EUNAVAILABLE (transient) when Redis did
 * not answer, ES_EINTERNAL with code "redis_error" when it answered with an
 * error (transient as its code says) or with a reply of the wrong shape.
 */
static es_status
redis_fail(redisContext *c, const redisReply *r, es_error *err, const char *what)
{
    es_status st;

    if (r == NULL)
        return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL, "redis: %s: %s",
                            what, c->err ? c->errstr : "no answer");
    if (r->type != REDIS_REPLY_ERROR)
        return es_error_set(err, ES_EINTERNAL, "redis_error", NULL,
                            "redis: %s: unexpected reply type %d", what, r->type);
    st = es_error_set(err, ES_EINTERNAL, "redis_error", NULL, "redis: %s: %s", what, r->str);
    if (err)
        err->transient = reply_transient(r->str);
    return st;
}

/* AUTH as ES_REDIS_USER with ES_REDIS_PASSWORD, when a password is set
 * (without a user: the default user's password).  The error names the
 * user and what Redis said, never the password. */
static es_status
authenticate(redisContext *c, es_error *err)
{
    const char *user = getenv("ES_REDIS_USER"), *pw = getenv("ES_REDIS_PASSWORD");
    redisReply *r;
    es_status st = ES_OK;

    if (pw == NULL || pw[0] == '\0')
        return ES_OK;
    if (user && user[0]) {
        const char *argv[] = {"AUTH", user, pw};
        r = redisCommandArgv(c, 3, argv, NULL);
    } else {
        const char *argv[] = {"AUTH", pw};
        r = redisCommandArgv(c, 2, argv, NULL);
    }
    if (r == NULL || r->type != REDIS_REPLY_STATUS)
        st = es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                          "could not authenticate to redis as \"%s\": %s",
                          user && user[0] ? user : "default",
                          r && r->type == REDIS_REPLY_ERROR ? r->str
                          : c->err                          ? c->errstr
                                                            : "no answer");
    freeReplyObject(r);
    return st;
}

/* What one Sentinel's answer names: fills host and *port, or leaves
 * *port 0 and says why in why. */
typedef void (*sentinel_pick)(const redisReply *r, char *host, size_t host_len, int *port,
                              char *why, size_t why_len);

/*
 * Sentinel mode (ES_REDIS_SENTINELS="host:port,host:port,..."): asks each
 * Sentinel in turn "SENTINEL <subcommand> <ES_REDIS_MASTER_NAME>" (default
 * name "es"), authenticating with ES_REDIS_SENTINEL_PASSWORD when it is
 * set, until pick finds a server in an answer; *port is 0 and err says
 * what the last Sentinel answered when none did.  Since each connection
 * is made anew after an I/O error (every caller drops a failed context),
 * a client follows a failover at its next reconnection.
 */
static es_status
sentinel_ask(const char *subcommand, sentinel_pick pick, const char *wanted, char *host,
             size_t host_len, int *port, long connect_ms, es_error *err)
{
    const char *list = getenv("ES_REDIS_SENTINELS"), *name = getenv("ES_REDIS_MASTER_NAME");
    const char *pw = getenv("ES_REDIS_SENTINEL_PASSWORD");
    struct timeval tv = {connect_ms / 1000, (connect_ms % 1000) * 1000};
    char last[400] = "no sentinel listed";
    const char *p = list;

    *port = 0;
    if (name == NULL || name[0] == '\0')
        name = "es";
    while (p && *p && *port == 0) {
        char one[128], *colon;
        size_t len = strcspn(p, ",");
        redisContext *c = NULL;
        redisReply *r = NULL;

        snprintf(one, sizeof one, "%.*s", (int)(len < sizeof one ? len : sizeof one - 1), p);
        p = p[len] ? p + len + 1 : NULL;
        if ((colon = strrchr(one, ':')) == NULL || atoi(colon + 1) <= 0) {
            snprintf(last, sizeof last, "\"%.127s\" is not host:port", one);
            continue;
        }
        *colon = '\0';
        c = redisConnectWithTimeout(one, atoi(colon + 1), tv);
        if (c == NULL || c->err) {
            snprintf(last, sizeof last, "%.127s:%.8s: %.200s", one, colon + 1,
                     c ? c->errstr : "out of memory");
            goto next;
        }
        redisSetTimeout(c, tv);
        if (pw && pw[0]) {
            const char *argv[] = {"AUTH", pw};

            r = redisCommandArgv(c, 2, argv, NULL);
            if (r == NULL || r->type == REDIS_REPLY_ERROR) {
                snprintf(last, sizeof last, "%.127s:%.8s: could not authenticate: %.200s", one,
                         colon + 1, r ? r->str : c->errstr);
                goto next;
            }
            freeReplyObject(r);
        }
        {
            const char *argv[] = {"SENTINEL", subcommand, name};

            r = redisCommandArgv(c, 3, argv, NULL);
        }
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(last, sizeof last, "%.127s:%.8s: %.200s", one, colon + 1,
                     r == NULL ? c->errstr : r->str);
        } else {
            char why[200] = "unexpected reply";

            pick(r, host, host_len, port, why, sizeof why);
            if (*port == 0)
                snprintf(last, sizeof last, "%.127s:%.8s: %.200s", one, colon + 1, why);
        }
next:
        freeReplyObject(r);
        if (c)
            redisFree(c);
    }
    if (*port > 0)
        return ES_OK;
    return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                        "no sentinel of %s named %s \"%s\" (last: %s)", list ? list : "",
                        wanted, name, last);
}

/* SENTINEL get-master-addr-by-name: [host, port]. */
static void
pick_primary(const redisReply *r, char *host, size_t host_len, int *port, char *why,
             size_t why_len)
{
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING &&
        r->element[1]->type == REDIS_REPLY_STRING && atoi(r->element[1]->str) > 0) {
        snprintf(host, host_len, "%s", r->element[0]->str);
        *port = atoi(r->element[1]->str);
    } else {
        snprintf(why, why_len, "does not know the primary");
    }
}

/* Where the primary named ES_REDIS_MASTER_NAME is, by the first Sentinel
 * that knows. */
static es_status
sentinel_primary(char *host, size_t host_len, int *port, long connect_ms, es_error *err)
{
    return sentinel_ask("get-master-addr-by-name", pick_primary, "the primary", host, host_len,
                        port, connect_ms, err);
}

/* What a ROLE answer r (NULL: none) says, for an error message. */
static const char *
role_said(const redisContext *c, const redisReply *r)
{
    if (r == NULL)
        return c->errstr;
    if (r->type == REDIS_REPLY_ERROR)
        return r->str;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_STRING)
        return r->element[0]->str;
    return "unexpected ROLE reply";
}

/* Sentinel mode: the server we reached is the primary (ROLE), not a
 * replica a Sentinel had not yet heard was demoted. */
static es_status
check_primary(redisContext *c, const char *host, int port, es_error *err)
{
    redisReply *r = redisCommand(c, "ROLE");
    es_status st = ES_OK;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "master") != 0)
        st = es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                          "redis at %s:%d is not the primary: %s", host, port,
                          role_said(c, r));
    freeReplyObject(r);
    return st;
}

/* How a connection made by connect_to is checked once it answers. */
typedef enum role_want { ROLE_ANY, ROLE_PRIMARY, ROLE_REPLICA } role_want;

/* Connects to host:port with the timeouts, the credentials and the
 * database of es_rm_connect, then checks the server's role. */
static redisContext *
connect_to(const char *host, int port, role_want role, es_error *err)
{
    const char *db = getenv("ES_REDIS_DB");
    long connect_ms = es_env_long(NULL, "ES_REDIS_CONNECT_TIMEOUT_MS", 2000, 1, 3600000);
    long command_ms = es_env_long(NULL, "ES_REDIS_TIMEOUT_MS", 10000, 1, 3600000);
    struct timeval tv = {connect_ms / 1000, (connect_ms % 1000) * 1000};
    redisContext *c;

    c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                     "could not connect to redis at %s:%d: %s", host, port,
                     c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    /* Timeouts on later commands too, so a stopped Redis is an error
     * (the command's answer, ES_REDIS_TIMEOUT_MS), and keepalives, so a
     * vanished host is one even while the connection is idle. */
    tv.tv_sec = command_ms / 1000;
    tv.tv_usec = (command_ms % 1000) * 1000;
    if (redisSetTimeout(c, tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
        es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                     "could not set the timeouts of the redis connection: %s", c->errstr);
        redisFree(c);
        return NULL;
    }
    if (authenticate(c, err) != ES_OK ||
        (role == ROLE_PRIMARY && check_primary(c, host, port, err) != ES_OK) ||
        (role == ROLE_REPLICA && es_rm_replica_check(c, err) != ES_OK)) {
        redisFree(c);
        return NULL;
    }
    if (db && db[0] && strcmp(db, "0") != 0) {
        redisReply *r = redisCommand(c, "SELECT %s", db);
        bool ok = r && r->type == REDIS_REPLY_STATUS;

        freeReplyObject(r);
        if (!ok) {
            es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                         "could not select redis database %s", db);
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

redisContext *
es_rm_connect(es_error *err)
{
    const char *host = getenv("ES_REDIS_HOST"), *port_s = getenv("ES_REDIS_PORT");
    const char *sentinels = getenv("ES_REDIS_SENTINELS");
    long connect_ms = es_env_long(NULL, "ES_REDIS_CONNECT_TIMEOUT_MS", 2000, 1, 3600000);
    bool via_sentinel = sentinels != NULL && sentinels[0] != '\0';
    char primary[256];
    int port;

    if (host == NULL || host[0] == '\0')
        host = "127.0.0.1";
    port = port_s && port_s[0] ? atoi(port_s) : 16379;
    if (via_sentinel) {
        if (sentinel_primary(primary, sizeof primary, &port, connect_ms, err) != ES_OK)
            return NULL;
        host = primary;
    }
    return connect_to(host, port, via_sentinel ? ROLE_PRIMARY : ROLE_ANY, err);
}

/* ---- replicas ---------------------------------------------------------- */

es_status
es_rm_replica_check(redisContext *c, es_error *err)
{
    redisReply *r = redisCommand(c, "ROLE");
    es_status st = ES_OK;

    /* ROLE of a replica: slave, primary's host, its port, link state, offset */
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 4 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[3]->type != REDIS_REPLY_STRING)
        st = es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                          "redis is not a replica: %s",
                          role_said(c, r));
    else if (strcmp(r->element[0]->str, "slave") != 0 ||
             strcmp(r->element[3]->str, "connected") != 0)
        st = es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                          "redis replica is not in step with its primary: ROLE %s, link %s",
                          r->element[0]->str, r->element[3]->str);
    freeReplyObject(r);
    return st;
}

/* The value of field in a flat field/value array reply, or NULL. */
static const char *
flat_get(const redisReply *r, const char *field)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, field) == 0)
            return r->element[i + 1]->type == REDIS_REPLY_STRING ? r->element[i + 1]->str : NULL;
    return NULL;
}

/* SENTINEL replicas: the first replica the Sentinel sees up ("slave"
 * with no other flag) with its link to the primary up. */
static void
pick_replica(const redisReply *r, char *host, size_t host_len, int *port, char *why,
             size_t why_len)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return;     /* "unexpected reply" */
    snprintf(why, why_len, "no replica up");
    for (size_t i = 0; i < r->elements && *port == 0; i++) {
        const char *ip = flat_get(r->element[i], "ip"), *pt = flat_get(r->element[i], "port");
        const char *flags = flat_get(r->element[i], "flags");
        const char *link = flat_get(r->element[i], "master-link-status");

        if (ip && pt && atoi(pt) > 0 && flags && strcmp(flags, "slave") == 0 && link &&
            strcmp(link, "ok") == 0) {
            snprintf(host, host_len, "%s", ip);
            *port = atoi(pt);
        }
    }
}

/* A replica of the primary ES_REDIS_MASTER_NAME in step with it, by the
 * first Sentinel that sees one. */
static es_status
sentinel_replica(char *host, size_t host_len, int *port, long connect_ms, es_error *err)
{
    return sentinel_ask("replicas", pick_replica, "a replica in step of the primary", host,
                        host_len, port, connect_ms, err);
}

redisContext *
es_rm_connect_replica(es_error *err)
{
    const char *given = getenv("ES_REDIS_REPLICA"), *sentinels = getenv("ES_REDIS_SENTINELS");
    long connect_ms = es_env_long(NULL, "ES_REDIS_CONNECT_TIMEOUT_MS", 2000, 1, 3600000);
    char host[256];
    const char *colon;
    int port;

    if (given && given[0]) {
        if ((colon = strrchr(given, ':')) == NULL || colon == given || atoi(colon + 1) <= 0) {
            es_error_set(err, ES_EINVALID, "config_invalid", "ES_REDIS_REPLICA",
                         "ES_REDIS_REPLICA must be host:port, not \"%.100s\"", given);
            return NULL;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - given), given);
        port = atoi(colon + 1);
    } else if (sentinels && sentinels[0]) {
        if (sentinel_replica(host, sizeof host, &port, connect_ms, err) != ES_OK)
            return NULL;
    } else {
        es_error_set(err, ES_EINVALID, "config_invalid", "ES_REDIS_REPLICA",
                     "a replica is found with ES_REDIS_REPLICA (host:port) or "
                     "ES_REDIS_SENTINELS; neither is set");
        return NULL;
    }
    return connect_to(host, port, ROLE_REPLICA, err);
}

/* ---- batches ---------------------------------------------------------- */

static es_rm_arg *
push(es_rm_batch *b)
{
    if (b->failed)
        return NULL;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        es_rm_arg *grown = realloc(b->args, cap * sizeof *grown);
        if (grown == NULL) {
            b->failed = true;
            return NULL;
        }
        b->args = grown;
        b->cap = cap;
    }
    memset(&b->args[b->n], 0, sizeof b->args[b->n]);
    return &b->args[b->n++];
}

static void
push_bytes(es_rm_batch *b, const char *s, size_t len)
{
    es_rm_arg *a = push(b);

    if (a == NULL)
        return;
    a->off = b->arena.len;
    a->len = len;
    es_buf_append(&b->arena, s, len);
    if (es_buf_failed(&b->arena))
        b->failed = true;
}

static void
push_num(es_rm_batch *b, long long v)
{
    es_rm_arg *a = push(b);

    if (a) {
        a->num = v;
        a->is_num = true;
    }
}

void
es_rm_batch_init(es_rm_batch *b, const char *name, const char *version)
{
    memset(b, 0, sizeof *b);
    push_bytes(b, name, strlen(name));
    push_bytes(b, version ? version : "", version ? strlen(version) : 0);
    b->ncmd_at = b->argc_at = SIZE_MAX;
}

void
es_rm_batch_free(es_rm_batch *b)
{
    es_buf_free(&b->arena);
    es_buf_free(&b->wire);
    free(b->args);
    memset(b, 0, sizeof *b);
}

void
es_rm_batch_reset(es_rm_batch *b, const char *name, const char *version)
{
    /* memory is kept: a rebuild formats thousands of batches alike */
    es_buf_reset(&b->arena);
    b->n = 0;
    b->events = 0;
    b->last_seq = 0;
    b->failed = es_buf_failed(&b->arena);
    push_bytes(b, name, strlen(name));
    push_bytes(b, version ? version : "", version ? strlen(version) : 0);
    b->ncmd_at = b->argc_at = SIZE_MAX;
}

es_rm_mark
es_rm_batch_mark(const es_rm_batch *b)
{
    es_rm_mark m = {b->n, b->arena.len, b->events, b->ncmd_at, b->argc_at, b->last_seq};
    return m;
}

void
es_rm_batch_rewind(es_rm_batch *b, es_rm_mark m)
{
    if (b->failed)
        return;             /* sticky: the batch is unusable anyway */
    b->n = m.n;
    b->arena.len = m.arena_len;
    if (b->arena.data)
        b->arena.data[m.arena_len] = '\0';
    b->events = m.events;
    b->ncmd_at = m.ncmd_at;
    b->argc_at = m.argc_at;
    b->last_seq = m.last_seq;
}

void
es_rm_batch_event(es_rm_batch *b, uint64_t seq, const char *position)
{
    push_num(b, (long long)seq);
    push_bytes(b, position, strlen(position));
    b->ncmd_at = b->n;
    b->argc_at = SIZE_MAX;
    push_num(b, 0);
    b->events++;
    b->last_seq = seq;
}

size_t
es_rm_batch_event_cmds(const es_rm_batch *b)
{
    return b->failed || b->ncmd_at == SIZE_MAX || b->ncmd_at >= b->n
               ? 0 : (size_t)b->args[b->ncmd_at].num;
}

static void
count_arg(es_rm_batch *b)
{
    if (!b->failed && b->argc_at != SIZE_MAX)
        b->args[b->argc_at].num++;
}

void
es_rm_cmd(es_rm_batch *b, const char *name, const char *keyfmt, ...)
{
    char key[512];
    va_list ap;
    int n;

    ES_ASSERT(b->ncmd_at != SIZE_MAX);
    va_start(ap, keyfmt);
    {
        /* "kind:%s", the common case, without printf */
        const char *pc = strchr(keyfmt, '%');
        if (pc && pc[1] == 's' && pc[2] == '\0') {
            const char *id = va_arg(ap, const char *);
            size_t kl = (size_t)(pc - keyfmt), il = strlen(id);
            n = (int)(kl + il);
            if (kl + il < sizeof key) {
                memcpy(key, keyfmt, kl);
                memcpy(key + kl, id, il + 1);
            }
        } else {
            n = vsnprintf(key, sizeof key, keyfmt, ap);
        }
    }
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof key) {
        b->failed = true;       /* keys are built from checked ids */
        return;
    }
    if (!b->failed)
        b->args[b->ncmd_at].num++;
    b->argc_at = b->n;
    push_num(b, 2);
    push_bytes(b, name, strlen(name));
    push_bytes(b, key, (size_t)n);
}

void
es_rm_arg_str(es_rm_batch *b, const char *s)
{
    count_arg(b);
    push_bytes(b, s, strlen(s));
}

void
es_rm_arg_int(es_rm_batch *b, long long v)
{
    count_arg(b);
    push_num(b, v);
}

void
es_rm_arg_fmt(es_rm_batch *b, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof text) {
        b->failed = true;
        return;
    }
    count_arg(b);
    push_bytes(b, text, (size_t)n);
}

void
es_rm_arg_json(es_rm_batch *b, const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);

    if (text == NULL) {
        b->failed = true;
        return;
    }
    es_rm_arg_str(b, text);
    free(text);
}

/* RESP, written directly: hiredis's printf-style formatting was a large
 * part of a rebuild's CPU time. */
/* Decimal digits of v into out (no NUL); returns their number.  printf
 * was the largest single cost of formatting a batch. */
static size_t
dec(char *out, long long v)
{
    char tmp[24];
    size_t n = 0, k = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        out[k++] = '-';
    while (n > 0)
        out[k++] = tmp[--n];
    return k;
}

static void
resp_head(es_buf *o, char kind, size_t n)
{
    char head[32];
    size_t k = 1;

    head[0] = kind;
    k += dec(head + 1, (long long)n);
    head[k++] = '\r';
    head[k++] = '\n';
    es_buf_append(o, head, k);
}

static void
resp_bulk(es_buf *o, const char *s, size_t len)
{
    resp_head(o, '$', len);
    es_buf_append(o, s, len);
    es_buf_append(o, "\r\n", 2);
}

static void
resp_array(es_buf *o, size_t n)
{
    resp_head(o, '*', n);
}

static void
resp_arg(es_buf *o, const es_rm_batch *b, size_t i)
{
    if (b->args[i].is_num) {
        char num[24];
        resp_bulk(o, num, dec(num, b->args[i].num));
    } else {
        resp_bulk(o, b->arena.data + b->args[i].off, b->args[i].len);
    }
}

/* EVALSHA (or EVAL) of s with args[0..n) as ARGV, and extra (when not
 * NULL) inserted as ARGV[3]. */
static void
format_script(es_buf *o, script *s, bool by_sha, const es_rm_batch *b, const char *extra)
{
    size_t i;

    resp_array(o, b->n + 3 + (extra != NULL));
    if (by_sha) {
        resp_bulk(o, "EVALSHA", 7);
        resp_bulk(o, sha_of(s), 40);
    } else {
        resp_bulk(o, "EVAL", 4);
        resp_bulk(o, s->text, strlen(s->text));
    }
    resp_bulk(o, "0", 1);
    for (i = 0; i < b->n; i++) {
        if (i == 2 && extra != NULL)
            resp_bulk(o, extra, strlen(extra));
        resp_arg(o, b, i);
    }
    if (b->n <= 2 && extra != NULL)
        resp_bulk(o, extra, strlen(extra));
}

static redisReply *
send_formatted(redisContext *c, const es_buf *o)
{
    void *r = NULL;

    if (es_buf_failed(o) || redisAppendFormattedCommand(c, o->data, o->len) != REDIS_OK ||
        redisGetReply(c, &r) != REDIS_OK)
        return NULL;
    return r;
}

static redisReply *
run_script_extra(redisContext *c, script *s, const es_rm_batch *b, const char *extra)
{
    es_buf o = ES_BUF_INIT;
    redisReply *r;

    if (b->failed)
        return NULL;
    format_script(&o, s, true, b, extra);
    r = send_formatted(c, &o);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        es_buf_reset(&o);
        format_script(&o, s, false, b, extra);
        r = send_formatted(c, &o);
    }
    es_buf_free(&o);
    return r;
}

static redisReply *
run_script(redisContext *c, script *s, const es_rm_batch *b)
{
    return run_script_extra(c, s, b, NULL);
}

/* Runs s with ARGV name, arg (NULL: ""). */
static redisReply *
run_on(redisContext *c, script *s, const char *name, const char *arg)
{
    es_rm_batch b;
    redisReply *r;

    es_rm_batch_init(&b, name, arg);
    r = run_script(c, s, &b);
    es_rm_batch_free(&b);
    return r;
}

static void
copy_str(char *dst, size_t size, const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        snprintf(dst, size, "%.*s", (int)r->len, r->str);
    else if (r->type == REDIS_REPLY_INTEGER)
        snprintf(dst, size, "%lld", r->integer);
    else
        dst[0] = '\0';
}

static es_status
parse_applied(redisContext *c, redisReply *r, es_rm_applied *out, es_error *err)
{
    es_status st;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 8 ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[3]->type != REDIS_REPLY_INTEGER ||
        r->element[4]->type != REDIS_REPLY_INTEGER || r->element[5]->type != REDIS_REPLY_INTEGER) {
        st = redis_fail(c, r, err, "apply");
        freeReplyObject(r);
        return st;
    }
    copy_str(out->version, sizeof out->version, r->element[0]);
    out->seq = (uint64_t)r->element[1]->integer;
    copy_str(out->position, sizeof out->position, r->element[2]);
    out->applied = (uint64_t)r->element[3]->integer;
    out->gap = r->element[4]->integer != 0;
    out->failed_seq = (uint64_t)r->element[5]->integer;
    copy_str(out->failed_why, sizeof out->failed_why, r->element[6]);
    out->failed_partial = r->element[7]->type == REDIS_REPLY_INTEGER && r->element[7]->integer != 0;
    out->failed_transient = out->failed_seq != 0 && reply_transient(out->failed_why);
    freeReplyObject(r);
    return ES_OK;
}

es_status
es_rm_apply(redisContext *c, es_rm_batch *b, es_rm_applied *out, es_error *err)
{
    return es_rm_apply_fenced(c, b, NULL, out, err);
}

/* The answer r (taken) to APPLY for b under lease. */
static es_status
applied_reply(redisContext *c, redisReply *r, const es_rm_batch *b, const char *lease,
              es_rm_applied *out, es_error *err)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "FENCED ", 7) == 0) {
        es_error_set(err, ES_ECONFLICT, "lease_lost", NULL,
                     "projection %.*s: the batch was refused: its lease is held by %s, not by "
                     "%s", (int)b->args[0].len, b->arena.data + b->args[0].off, r->str + 7,
                     lease);
        freeReplyObject(r);
        return ES_ECONFLICT;
    }
    return parse_applied(c, r, out, err);
}

es_status
es_rm_apply_fenced(redisContext *c, es_rm_batch *b, const char *lease, es_rm_applied *out,
                   es_error *err)
{
    if (b->failed)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory building a batch");
    return applied_reply(c, run_script_extra(c, &APPLY, b, lease ? lease : ""), b,
                         lease ? lease : "", out, err);
}

/* Appends the trace stages' commands to c's output; *replies: how many. */
static es_status
trace_append(redisContext *c, const es_rm_trace_stage *s, size_t n, int ttl_s, size_t *replies,
             es_error *err);
/* Reads the replies of trace_append's commands (all of them, also after a
 * failure, so that the connection stays in step). */
static es_status trace_read(redisContext *c, size_t replies, es_error *err);

/*
 * A transaction's counts, merged: every HINCRBY key field 1 (or -1) of
 * the events it takes adds into one command per key and field (the first
 * of them, its head), the later ones are not sent.  The dashboard counts
 * every event twice (events, and its type's counter), which made two of
 * the five commands an OrderPlaced costs Redis, each parsed, queued and
 * answered on its own.  EXEC runs the transaction's commands at once, so
 * no reader sees the counts between two events of a batch either way.
 * Only keys the batch does nothing else to are merged (so no other write
 * to the same field moves across the counts); a refused head fails every
 * event merged into it, as each of their own would have.
 */
#define COUNTS_MAX 32
typedef struct counts {
    size_t n;
    size_t head[COUNTS_MAX];    /* argument index (the argc) of each head */
    long long sum[COUNTS_MAX];
    bool other[COUNTS_MAX];     /* another command writes its key: not merged */
    bool refused[COUNTS_MAX];   /* its head was refused (fast_settle) */
} counts;

static void counts_plan(counts *m, const es_rm_batch *b, uint64_t after);
static void format_writes(es_buf *o, const es_rm_batch *b, const es_buf *prefix, uint64_t after,
                          const counts *m, size_t *ncmd, size_t *last);
static void format_checkpoint(es_buf *o, const es_rm_batch *b, const es_buf *prefix, size_t last);
static void key_prefix(es_buf *p, const es_rm_batch *b, const char *version);

/* ZADD key score member [score member ...] with every score a number
 * (no flags, nothing Redis could read as a bad score). */
static bool
zadd_plain(const es_rm_batch *b, size_t i)
{
    size_t argc = (size_t)b->args[i - 1].num, k;

    if (argc < 4 || (argc - 2) % 2 != 0)
        return false;
    for (k = i + 2; k < i + argc - 1; k += 2)
        if (!b->args[k].is_num)
            return false;
    return true;
}

/*
 * Commands Redis refuses only when queued (arity, an unknown command, out
 * of memory: then EXEC runs nothing) or for a key of another type, never
 * for the values given: HSET, RPUSH, SET, ZREM, ZADD with the scores
 * the projections give (numbers), and HINCRBY by 1 or -1 (a count).  A refusal inside EXEC cannot stop the batch
 * before its event, so a command that can be refused for its values (a
 * counter that would overflow, a field that is not a number) keeps its
 * batch on the script's way.
 */
static bool
never_refused(const es_rm_batch *b, size_t i)
{
    static const char *const ok[] = {"HSET", "RPUSH", "SET", "ZADD", "ZREM"};
    const es_rm_arg *a = &b->args[i];

    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++)
        if (!a->is_num && a->len == strlen(ok[k]) &&
            memcmp(b->arena.data + a->off, ok[k], a->len) == 0)
            return strcmp(ok[k], "ZADD") != 0 || zadd_plain(b, i);
    /* a counter of events (HINCRBY key field 1 or -1): to overflow it
     * would take 2^63 of them; an amount added is refused for its value */
    if (!a->is_num && a->len == 7 && memcmp(b->arena.data + a->off, "HINCRBY", 7) == 0 &&
        b->args[i - 1].num == 4 && b->args[i + 3].is_num &&
        (b->args[i + 3].num == 1 || b->args[i + 3].num == -1))
        return true;
    return false;
}

/* The job can go the transaction's way: it names what its caller saw, the
 * batch applies to the active version, its events past that checkpoint
 * follow it without a gap, and Redis cannot refuse their commands for
 * their values (never_refused). */
static bool
fast_eligible(const es_rm_apply_job *j)
{
    const es_rm_batch *b = j->batch;
    uint64_t next = j->seq + 1;
    size_t i = 2;

    if (b->failed || j->version == NULL || j->version[0] == '\0' || b->n < 2 ||
        b->args[1].len != 0 || strlen(j->version) >= ES_RM_VERSION_MAX)
        return false;
    while (i < b->n) {
        uint64_t seq = (uint64_t)b->args[i].num;
        long long cmds = b->args[i + 2].num, k;

        if (seq > j->seq) {
            if (seq != next)
                return false;
            next++;
        }
        for (i += 3, k = 0; k < cmds; k++) {
            if (seq > j->seq && !never_refused(b, i + 1))
                return false;
            i += 1 + (size_t)b->args[i].num;
        }
    }
    return true;
}

/* Reads one reply; NULL when the connection failed. */
static redisReply *
reply_get(redisContext *c)
{
    void *r = NULL;

    return redisGetReply(c, &r) == REDIS_OK ? r : NULL;
}

static bool
reply_is(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* Every job not settled fails with the connection's error. */
static es_status
fast_broken(redisContext *c, es_rm_apply_job *jobs, size_t n)
{
    es_status st = ES_OK;

    for (size_t i = 0; i < n; i++)
        st = jobs[i].status = redis_fail(c, NULL, &jobs[i].err, "apply");
    return st;
}

/*
 * Round trip one of the transaction's way: WATCH every job's lease, active
 * version and checkpoint, read them, and open the transaction (MULTI).
 * True when all are as the jobs' callers saw them and the transaction is
 * open (each job's position then set from its checkpoint); false
 * otherwise, with the transaction and the WATCH undone, or when the
 * connection failed (*st).
 */
/* Appends to o, as bulk strings, job j's watched keys numbered from..to:
 * 0 its lease, 1 the active version, 2 the checkpoint of the version the
 * caller saw. */
static void
watched_keys(es_buf *o, const es_rm_apply_job *j, int from, int to)
{
    const es_rm_batch *b = j->batch;
    int nl = (int)b->args[0].len;
    const char *name = b->arena.data + b->args[0].off;
    es_buf k = ES_BUF_INIT;

    for (int w = from; w <= to; w++) {
        es_buf_reset(&k);
        if (w == 2)
            es_buf_printf(&k, "rm:%.*s:%s:checkpoint", nl, name, j->version);
        else
            es_buf_printf(&k, "rm:%.*s:%s", nl, name, w == 0 ? "lease" : "active");
        if (es_buf_failed(&k))
            o->failed = true;
        else
            resp_bulk(o, k.data, k.len);
    }
    es_buf_free(&k);
}

static bool
fast_check(redisContext *c, es_rm_apply_job *jobs, size_t n, es_status *st)
{
    es_buf o = ES_BUF_INIT;
    bool ok = true;
    size_t i, nfast = 0;
    redisReply *r;

    for (i = 0; i < n; i++)
        nfast += jobs[i].transaction;
    resp_array(&o, 1 + 3 * nfast);
    resp_bulk(&o, "WATCH", 5);
    for (i = 0; i < n; i++)
        if (jobs[i].transaction)
            watched_keys(&o, &jobs[i], 0, 2);
    for (i = 0; i < n; i++) {
        if (!jobs[i].transaction)
            continue;
        resp_array(&o, 3);
        resp_bulk(&o, "MGET", 4);
        watched_keys(&o, &jobs[i], 0, 1);
        resp_array(&o, 4);
        resp_bulk(&o, "HMGET", 5);
        watched_keys(&o, &jobs[i], 2, 2);
        resp_bulk(&o, "seq", 3);
        resp_bulk(&o, "position", 8);
    }
    /* MULTI now, checked before any write is sent: a connection that may
     * not open a transaction would run them one by one */
    resp_array(&o, 1);
    resp_bulk(&o, "MULTI", 5);
    if (es_buf_failed(&o) || redisAppendFormattedCommand(c, o.data, o.len) != REDIS_OK) {
        es_buf_free(&o);
        return false;   /* nothing sent: the scripts' way meets it */
    }
    es_buf_free(&o);
    if ((r = reply_get(c)) == NULL) {
        *st = fast_broken(c, jobs, n);
        return false;
    }
    ok = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    for (i = 0; i < n; i++) {
        es_rm_apply_job *j = &jobs[i];
        redisReply *m, *h;

        if (!j->transaction)
            continue;
        m = reply_get(c);
        h = m ? reply_get(c) : NULL;

        if (h == NULL) {
            freeReplyObject(m);
            *st = fast_broken(c, jobs, n);
            return false;
        }
        if (m->type != REDIS_REPLY_ARRAY || m->elements != 2 || h->type != REDIS_REPLY_ARRAY ||
            h->elements != 2)
            ok = false;
        else {
            const char *lease = j->lease ? j->lease : "";
            uint64_t cp = h->element[0]->type == REDIS_REPLY_STRING
                              ? strtoull(h->element[0]->str, NULL, 10) : 0;

            ok &= (lease[0] == '\0' || reply_is(m->element[0], lease)) &&
                  reply_is(m->element[1], j->version) && cp == j->seq;
            copy_str(j->out.position, sizeof j->out.position, h->element[1]);
        }
        freeReplyObject(m);
        freeReplyObject(h);
    }
    if ((r = reply_get(c)) == NULL) {
        *st = fast_broken(c, jobs, n);
        return false;
    }
    if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0) {
        /* no transaction open: only the WATCH to undo */
        freeReplyObject(r);
        if ((r = redisCommand(c, "UNWATCH")) == NULL) {
            *st = fast_broken(c, jobs, n);
            return false;
        }
        freeReplyObject(r);
        return false;
    }
    freeReplyObject(r);
    if (!ok) {
        /* DISCARD ends the transaction and the WATCH */
        if ((r = redisCommand(c, "DISCARD")) == NULL) {
            *st = fast_broken(c, jobs, n);
            return false;
        }
        freeReplyObject(r);
    }
    return ok;
}

static int count_of(const counts *m, const es_rm_batch *b, size_t i);

/* The outcome of job j from its part of EXEC's answer, elements [*at..);
 * *at moves past it.  last: the argument index of its last event (0:
 * none written); m: its counts as merged (counts_plan). */
static void
fast_settle(redisContext *c, es_rm_apply_job *j, const redisReply *ex, size_t *at, size_t last,
            counts *m)
{
    const es_rm_batch *b = j->batch;
    size_t i = 2;

    snprintf(j->out.version, sizeof j->out.version, "%s", j->version);
    j->out.seq = j->seq;
    j->status = ES_OK;
    j->transaction = true;
    while (i < b->n) {
        uint64_t seq = (uint64_t)b->args[i].num;
        long long cmds = b->args[i + 2].num, k;
        bool taken = seq > j->seq, refused = false, landed = false;

        for (i += 3, k = 0; k < cmds; k++) {
            int h = taken ? count_of(m, b, i) : -1;

            if (h >= 0 && m->head[h] != i) {
                /* merged into its head, which answered for it */
                if (m->refused[h])
                    refused = true;
                else
                    landed = true;
            } else if (taken) {
                const redisReply *r = ex->element[(*at)++];

                if (h >= 0)
                    m->refused[h] = r->type == REDIS_REPLY_ERROR;
                if (r->type != REDIS_REPLY_ERROR)
                    landed = true;
                else if (!refused) {
                    refused = true;
                    if (j->out.failed_seq == 0) {
                        j->out.failed_seq = seq;
                        snprintf(j->out.failed_why, sizeof j->out.failed_why, "%s", r->str);
                    }
                }
            }
            i += 1 + (size_t)b->args[i].num;
        }
        if (refused && j->out.failed_seq == seq) {
            /* the checkpoint passes it with the rest of the batch */
            j->out.failed_partial = landed;
            j->out.failed_passed = true;
        }
        if (taken && !refused)
            j->out.applied++;
    }
    if (last != 0) {
        const redisReply *cp = ex->element[(*at)++];

        (*at)++;    /* PUBLISH's count of listeners */
        j->out.seq = (uint64_t)b->args[last].num;
        snprintf(j->out.position, sizeof j->out.position, "%.*s", (int)b->args[last + 1].len,
                 b->arena.data + b->args[last + 1].off);
        if (cp->type == REDIS_REPLY_ERROR)
            j->status = redis_fail(c, cp, &j->err, "apply (checkpoint)");
    }
}

/* The connection failed while the answers were read: every job has its
 * error, and so have the trace stages sent with them (traced). */
static bool
fast_lost(redisContext *c, es_rm_apply_job *jobs, size_t n, bool traced, es_error *trace_err,
          es_status *st)
{
    *st = fast_broken(c, jobs, n);
    if (traced)
        es_error_set(trace_err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                     "redis: trace: not recorded: %s", c->err ? c->errstr : "no answer");
    return true;
}

/*
 * The transaction's way (es_rm_apply_all, readmodel.h): true when every
 * job is settled, or the connection failed (*st); false when nothing was
 * written and the scripts must run.  *traced: the trace stages were sent
 * (and answered) here.
 */
static bool
apply_fast(redisContext *c, es_rm_apply_job *jobs, size_t n, const es_rm_trace_stage *s,
           size_t ns, int ttl_s, es_error *trace_err, void (*meanwhile)(void *arg), void *arg,
           bool *traced, es_status *st)
{
    es_buf o = ES_BUF_INIT, prefix = ES_BUF_INIT;
    size_t i, total = 0, replies = 0, at = 0, last[16], queued;
    counts cnt[16];
    redisReply *r, *ex;
    bool any = false;

    *traced = false;
    if (n == 0 || n > sizeof last / sizeof last[0])
        return false;
    for (i = 0; i < n; i++) {
        /* marked now; those not marked go by script after */
        jobs[i].again_ = false;
        jobs[i].transaction = fast_eligible(&jobs[i]);
        any |= jobs[i].transaction;
        if (jobs[i].transaction)
            memset(&jobs[i].out, 0, sizeof jobs[i].out);
    }
    if (!any || !fast_check(c, jobs, n, st))
        return *st != ES_OK;
    for (i = 0; i < n; i++) {
        const es_rm_batch *b = jobs[i].batch;

        last[i] = 0;
        if (!jobs[i].transaction)
            continue;
        counts_plan(&cnt[i], b, jobs[i].seq);
        es_buf_reset(&prefix);
        key_prefix(&prefix, b, jobs[i].version);
        if (es_buf_failed(&prefix))
            o.failed = true;    /* never a command on an unprefixed key */
        else
            format_writes(&o, b, &prefix, jobs[i].seq, &cnt[i], &total, &last[i]);
        if (last[i] != 0) {
            format_checkpoint(&o, b, &prefix, last[i]);
            resp_array(&o, 3);
            resp_bulk(&o, "PUBLISH", 7);
            es_buf_printf(&o, "$%zu\r\nrm:%.*s:applied\r\n", b->args[0].len + 11,
                          (int)b->args[0].len, b->arena.data + b->args[0].off);
            {
                es_buf m = ES_BUF_INIT;

                es_buf_printf(&m, "%s %lld %.*s", jobs[i].version, b->args[last[i]].num,
                              (int)b->args[last[i] + 1].len,
                              b->arena.data + b->args[last[i] + 1].off);
                if (es_buf_failed(&m))
                    o.failed = true;
                else
                    resp_bulk(&o, m.data, m.len);
                es_buf_free(&m);
            }
            total += 2;
        }
    }
    resp_array(&o, 1);
    resp_bulk(&o, "EXEC", 4);
    es_buf_free(&prefix);
    if (es_buf_failed(&o) || redisAppendFormattedCommand(c, o.data, o.len) != REDIS_OK) {
        /* nothing queued: DISCARD ends the transaction and the WATCH */
        es_buf_free(&o);
        if ((r = redisCommand(c, "DISCARD")) == NULL)
            *st = fast_broken(c, jobs, n);
        freeReplyObject(r);
        return *st != ES_OK;
    }
    es_buf_free(&o);
    if (ns > 0) {
        if (trace_append(c, s, ns, ttl_s, &replies, trace_err) != ES_OK) {
            /* the pipe may hold part of them: the connection is to go */
            *st = fast_broken(c, jobs, n);
            return true;
        }
        *traced = true;
    }
    if (meanwhile != NULL) {
        int done = 0;

        while (!done && redisBufferWrite(c, &done) == REDIS_OK)
            ;
        meanwhile(arg);
    }
    /* a QUEUED (or a refusal) per command, then EXEC's (MULTI's OK was
     * read with the checks) */
    for (queued = 0; queued < total; queued++) {
        if ((r = reply_get(c)) == NULL)
            return fast_lost(c, jobs, n, *traced, trace_err, st);
        freeReplyObject(r);
    }
    if ((ex = reply_get(c)) == NULL)
        return fast_lost(c, jobs, n, *traced, trace_err, st);
    if (*traced && trace_read(c, replies, trace_err) != ES_OK && c->err) {
        freeReplyObject(ex);
        return fast_lost(c, jobs, n, false, trace_err, st);
    }
    /* nil: a watched key changed, nothing ran; an error: refused before
     * running (EXECABORT: a command refused when queued, out of memory
     * among them), nothing ran either */
    if (ex->type != REDIS_REPLY_ARRAY || ex->elements != total) {
        freeReplyObject(ex);
        return false;
    }
    for (i = 0; i < n; i++)
        if (jobs[i].transaction)
            fast_settle(c, &jobs[i], ex, &at, last[i], &cnt[i]);
    freeReplyObject(ex);
    return true;
}

static es_status apply_scripts(redisContext *c, es_rm_apply_job *jobs, size_t n,
                               const es_rm_trace_stage *s, size_t ns, int ttl_s,
                               es_error *trace_err, void (*meanwhile)(void *arg), void *arg);

es_status
es_rm_apply_all(redisContext *c, es_rm_apply_job *jobs, size_t n, const es_rm_trace_stage *s,
                size_t ns, int ttl_s, es_error *trace_err, void (*meanwhile)(void *arg),
                void *arg)
{
    es_status st = ES_OK;
    bool traced = false;

    size_t i, rest = 0;

    if (!apply_fast(c, jobs, n, s, ns, ttl_s, trace_err, meanwhile, arg, &traced, &st))
        for (i = 0; i < n; i++)
            jobs[i].transaction = false;    /* nothing written: all by script */
    else if (st != ES_OK)
        return st;
    for (i = 0; i < n; i++)
        rest += !jobs[i].transaction;
    if (rest == 0)
        return ES_OK;
    return apply_scripts(c, jobs, n, traced ? NULL : s, traced ? 0 : ns, ttl_s, trace_err,
                         meanwhile, arg);
}

static es_status
apply_scripts(redisContext *c, es_rm_apply_job *jobs, size_t n, const es_rm_trace_stage *s,
              size_t ns, int ttl_s, es_error *trace_err, void (*meanwhile)(void *arg), void *arg)
{
    es_buf o = ES_BUF_INIT;
    size_t i, replies = 0;
    es_status st = ES_OK;

    for (i = 0; i < n; i++) {
        es_rm_apply_job *j = &jobs[i];

        j->again_ = false;
        if (j->transaction)
            continue;   /* settled by the transaction's way */
        memset(&j->out, 0, sizeof j->out);
        j->status = es_error_set(&j->err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                 "redis: apply: not sent");
        if (j->batch->failed) {
            j->status = es_error_set(&j->err, ES_ENOMEM, NULL, NULL,
                                     "out of memory building a batch");
            continue;
        }
        es_buf_reset(&o);
        format_script(&o, &APPLY, true, j->batch, j->lease ? j->lease : "");
        if (es_buf_failed(&o) || redisAppendFormattedCommand(c, o.data, o.len) != REDIS_OK) {
            es_buf_free(&o);
            return redis_fail(c, NULL, trace_err, "apply");
        }
        j->again_ = true;       /* sent: its reply is to be read */
    }
    es_buf_free(&o);
    if (ns > 0 && trace_append(c, s, ns, ttl_s, &replies, trace_err) != ES_OK)
        return trace_err->status;
    if (meanwhile != NULL) {
        /* all of it on the wire first, so that Redis works meanwhile; a
         * write that fails leaves c->err, which the first read reports */
        int done = 0;

        while (!done && redisBufferWrite(c, &done) == REDIS_OK)
            ;
        meanwhile(arg);
    }
    /* The replies, in the order sent.  A connection that fails fails the
     * rest alike: whether those scripts ran is not known, so the caller
     * connects again and reads the checkpoints. */
    for (i = 0; i < n; i++) {
        es_rm_apply_job *j = &jobs[i];
        redisReply *r = NULL;

        if (!j->again_)
            continue;
        j->again_ = false;
        if (st != ES_OK || redisGetReply(c, (void **)&r) != REDIS_OK) {
            st = j->status = redis_fail(c, NULL, &j->err, "apply");
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
            /* not run (Redis restarted or its scripts were flushed): sent
             * again by text once the pipe is read */
            freeReplyObject(r);
            j->again_ = true;
            continue;
        }
        j->status = applied_reply(c, r, j->batch, j->lease ? j->lease : "", &j->out, &j->err);
    }
    if (st != ES_OK) {
        if (ns > 0)
            es_error_set(trace_err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                         "redis: trace: not recorded: %s", c->err ? c->errstr : "no answer");
        return st;
    }
    if (replies > 0 && (st = trace_read(c, replies, trace_err)) != ES_OK && c->err)
        return st;
    for (i = 0; i < n; i++)
        if (jobs[i].again_)
            jobs[i].status = es_rm_apply_fenced(c, jobs[i].batch, jobs[i].lease, &jobs[i].out,
                                                &jobs[i].err);
    return ES_OK;
}

/* ---- the projector's leases ------------------------------------------- */

/* The arguments of LEASE for projection name (es_rm_lease_hold's). */
static void
lease_args(es_rm_batch *b, const char *name, const char *instance, long ms, bool waited,
           const char *token)
{
    es_rm_batch_init(b, name, token);
    push_bytes(b, instance, strlen(instance));
    push_num(b, ms);
    push_bytes(b, waited ? "1" : "0", 1);
}

/* Reads LEASE's answer r (freed) into token, *outcome and holder. */
static es_status
lease_answer(redisContext *c, redisReply *r, char *token, es_rm_lease_outcome *outcome,
             char *holder, size_t size, es_error *err)
{
    es_status st = ES_OK;

    *outcome = ES_RM_LEASE_OTHER;
    if (holder && size > 0)
        holder[0] = '\0';
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING) {
        st = redis_fail(c, r, err, "lease");
    } else {
        switch (r->element[0]->integer) {
        case 1: *outcome = ES_RM_LEASE_RENEWED; break;
        case 2: *outcome = ES_RM_LEASE_TAKEN; break;
        case 3: *outcome = ES_RM_LEASE_HANDED_OVER; break;
        case 4: *outcome = ES_RM_LEASE_FREE; break;
        default: *outcome = ES_RM_LEASE_OTHER; break;
        }
        if (*outcome == ES_RM_LEASE_RENEWED || *outcome == ES_RM_LEASE_TAKEN)
            copy_str(token, ES_RM_LEASE_MAX, r->element[1]);
        else
            token[0] = '\0';
        if (holder && size > 0)
            copy_str(holder, size, r->element[1]);
    }
    freeReplyObject(r);
    return st;
}

es_status
es_rm_lease_hold(redisContext *c, const char *name, const char *instance, long ms, bool waited,
                 char *token, es_rm_lease_outcome *outcome, char *holder, size_t size,
                 es_error *err)
{
    es_rm_batch b;
    redisReply *r;

    lease_args(&b, name, instance, ms, waited, token);
    r = run_script(c, &LEASE, &b);
    es_rm_batch_free(&b);
    return lease_answer(c, r, token, outcome, holder, size, err);
}

/* Reads the next reply of a pipeline; NULL when the connection failed. */
static redisReply *
next_reply(redisContext *c)
{
    void *r = NULL;

    return redisGetReply(c, &r) == REDIS_OK ? r : NULL;
}

es_status
es_rm_leases_hold(redisContext *c, const char *instance, long ms, es_rm_lease_ask *asks,
                  size_t n, es_error *err)
{
    es_buf o = ES_BUF_INIT;
    es_status st = ES_OK;
    size_t i, sent = 0, read = 0;
    bool *noscript = calloc(n ? n : 1, sizeof *noscript);

    if (noscript == NULL)
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    /* round 1: each lease (by its SHA) and the projection's versions */
    for (i = 0; i < n; i++) {
        es_rm_batch b;
        es_rm_lease_ask *a = &asks[i];

        memset(&a->state, 0, sizeof a->state);
        lease_args(&b, a->name, instance, ms, a->waited, a->token);
        es_buf_reset(&o);
        if (!b.failed)
            format_script(&o, &LEASE, true, &b, NULL);
        es_rm_batch_free(&b);
        if (b.failed || es_buf_failed(&o) ||
            redisAppendFormattedCommand(c, o.data, o.len) != REDIS_OK)
            break;
        sent++;
        if (redisAppendCommand(c, "MGET rm:%s:active rm:%s:building", a->name, a->name) !=
            REDIS_OK)
            break;
        sent++;
    }
    es_buf_free(&o);
    /* every reply sent for is read, even after a failure, so that the
     * connection is left with none pending (or is broken) */
    for (read = 0; read < sent; read++) {
        redisReply *r = next_reply(c);
        es_rm_lease_ask *a = &asks[read / 2];

        if (r == NULL) {
            if (st == ES_OK)
                st = redis_fail(c, NULL, err, read % 2 ? "state" : "lease");
            break;
        }
        if (st != ES_OK) {
            freeReplyObject(r);
        } else if (read % 2 == 0) {
            if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
                noscript[read / 2] = true;      /* ran below, with its text */
                freeReplyObject(r);
            } else {
                st = lease_answer(c, r, a->token, &a->outcome, a->holder, sizeof a->holder, err);
            }
        } else {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
                st = redis_fail(c, r, err, "state");
            else {
                copy_str(a->state.active, sizeof a->state.active, r->element[0]);
                copy_str(a->state.building, sizeof a->state.building, r->element[1]);
            }
            freeReplyObject(r);
        }
    }
    if (st == ES_OK && sent < 2 * n)
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "could not format the leases' calls");
    for (i = 0; st == ES_OK && i < n; i++)
        if (noscript[i])
            st = es_rm_lease_hold(c, asks[i].name, instance, ms, asks[i].waited, asks[i].token,
                                  &asks[i].outcome, asks[i].holder, sizeof asks[i].holder, err);
    free(noscript);
    if (st != ES_OK)
        return st;
    /* round 2: the checkpoint of each active version */
    for (i = 0, sent = 0; i < n; i++) {
        if (asks[i].state.active[0] == '\0')
            continue;
        if (redisAppendCommand(c, "HMGET rm:%s:%s:checkpoint seq position", asks[i].name,
                               asks[i].state.active) != REDIS_OK) {
            /* the replies of those already sent are still read below */
            st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            break;
        }
        sent++;
    }
    for (i = 0; i < n && sent > 0; i++) {
        es_rm_state *s = &asks[i].state;
        redisReply *r;

        if (s->active[0] == '\0')
            continue;
        sent--;
        if ((r = next_reply(c)) == NULL)
            return redis_fail(c, NULL, err, "checkpoint");
        if (st == ES_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 2)) {
            st = redis_fail(c, r, err, "checkpoint");
        } else if (st == ES_OK) {
            s->seq = r->element[0]->type == REDIS_REPLY_STRING
                         ? strtoull(r->element[0]->str, NULL, 10) : 0;
            copy_str(s->position, ES_RM_POSITION_MAX, r->element[1]);
        }
        freeReplyObject(r);
    }
    return st;
}

void
es_rm_lease_release(redisContext *c, const char *name, const char *token)
{
    if (token != NULL && token[0] != '\0')
        freeReplyObject(run_on(c, &UNLEASE, name, token));
}



/* "rm:<name>:<version>:" for b's projection (version: b's own when NULL). */
static void
key_prefix(es_buf *p, const es_rm_batch *b, const char *version)
{
    if (version != NULL)
        es_buf_printf(p, "rm:%.*s:%s:", (int)b->args[0].len, b->arena.data + b->args[0].off,
                      version);
    else
        es_buf_printf(p, "rm:%.*s:%.*s:", (int)b->args[0].len, b->arena.data + b->args[0].off,
                      (int)b->args[1].len, b->arena.data + b->args[1].off);
}

/* A count: HINCRBY key field 1 or -1 (i: the command's argc index). */
static bool
is_count(const es_rm_batch *b, size_t i)
{
    const es_rm_arg *a = &b->args[i];

    return a->num == 4 && !a[1].is_num && a[1].len == 7 &&
           memcmp(b->arena.data + a[1].off, "HINCRBY", 7) == 0 && !a[2].is_num &&
           !a[3].is_num && a[4].is_num && (a[4].num == 1 || a[4].num == -1);
}

static bool
same_arg(const es_rm_batch *b, size_t x, size_t y)
{
    return b->args[x].len == b->args[y].len &&
           memcmp(b->arena.data + b->args[x].off, b->arena.data + b->args[y].off,
                  b->args[x].len) == 0;
}

/* The head command i merges into (m's index), or -1: sent as it is. */
static int
count_of(const counts *m, const es_rm_batch *b, size_t i)
{
    size_t k;

    if (m == NULL || m->n == 0 || !is_count(b, i))
        return -1;
    for (k = 0; k < m->n; k++)
        if (!m->other[k] && same_arg(b, m->head[k] + 2, i + 2) &&
            same_arg(b, m->head[k] + 3, i + 3))
            return (int)k;
    return -1;
}

/* Which counts of b's events past after merge, and into what (counts). */
static void
counts_plan(counts *m, const es_rm_batch *b, uint64_t after)
{
    size_t i, k, pass;

    memset(m, 0, sizeof *m);
    /* first the heads and their sums, then the keys written otherwise */
    for (pass = 0; pass < 2; pass++) {
        for (i = 2; i < b->n;) {
            long long cmds = b->args[i + 2].num, c;
            bool take = (uint64_t)b->args[i].num > after;

            for (i += 3, c = 0; c < cmds; c++) {
                if (take && pass == 0 && is_count(b, i)) {
                    for (k = 0; k < m->n; k++)
                        if (same_arg(b, m->head[k] + 2, i + 2) &&
                            same_arg(b, m->head[k] + 3, i + 3))
                            break;
                    if (k < m->n) {
                        m->sum[k] += b->args[i + 4].num;
                    } else if (m->n < COUNTS_MAX) {
                        m->head[m->n] = i;
                        m->sum[m->n++] = b->args[i + 4].num;
                    }
                } else if (take && pass == 1 && !is_count(b, i)) {
                    for (k = 0; k < m->n; k++)
                        if (same_arg(b, m->head[k] + 2, i + 2))
                            m->other[k] = true;
                }
                i += 1 + (size_t)b->args[i].num;
            }
        }
        if (m->n == 0)
            break;
    }
}

/*
 * Formats as plain commands, keys under prefix, the commands of b's events
 * with a sequence above after (the others are skipped, as the apply script
 * skips them), the counts merged as m says (NULL: none merged); *ncmd
 * counts them; *last is the argument index of the last formatted event's
 * sequence (0: none).
 */
static void
format_writes(es_buf *o, const es_rm_batch *b, const es_buf *prefix, uint64_t after,
              const counts *m, size_t *ncmd, size_t *last)
{
    size_t i = 2;

    *last = 0;
    while (i < b->n) {
        long long cmds = b->args[i + 2].num, k;
        bool take = (uint64_t)b->args[i].num > after;

        if (take)
            *last = i;
        i += 3;
        for (k = 0; k < cmds; k++) {
            size_t argc = (size_t)b->args[i].num, j;
            const es_rm_arg *key = &b->args[i + 2];
            int h = take ? count_of(m, b, i) : -1;

            if (take && (h < 0 || m->head[h] == i)) {
                resp_array(o, argc);
                resp_arg(o, b, i + 1);
                resp_head(o, '$', prefix->len + key->len);
                es_buf_append(o, prefix->data, prefix->len);
                es_buf_append(o, b->arena.data + key->off, key->len);
                es_buf_append(o, "\r\n", 2);
                if (h >= 0) {
                    char num[24];

                    resp_arg(o, b, i + 3);
                    resp_bulk(o, num, dec(num, m->sum[h]));
                } else {
                    for (j = 3; j <= argc; j++)
                        resp_arg(o, b, i + j);
                }
                (*ncmd)++;
            }
            i += 1 + argc;
        }
    }
}

/* HSET <prefix>checkpoint seq <b's args[last]> position <args[last + 1]>. */
static void
format_checkpoint(es_buf *o, const es_rm_batch *b, const es_buf *prefix, size_t last)
{
    resp_array(o, 6);
    resp_bulk(o, "HSET", 4);
    es_buf_printf(o, "$%zu\r\n%scheckpoint\r\n", prefix->len + 10, prefix->data);
    resp_bulk(o, "seq", 3);
    resp_arg(o, b, last);
    resp_bulk(o, "position", 8);
    resp_arg(o, b, last + 1);
}

/*
 * The single writer's path (a rebuild owns its version): the batch's
 * commands with the version's prefix and the new checkpoint, between MULTI
 * and EXEC, without Lua.  Nothing is skipped here, so the caller must send
 * exactly the events after the checkpoint, and hold the rebuild lock.
 */
es_status
es_rm_write_send(redisContext *c, es_rm_batch *b, size_t *replies, es_error *err)
{
    es_buf o = b->wire, prefix = ES_BUF_INIT;
    size_t ncmd = 0, last;
    int rc;

    if (b->failed || b->n < 2 || b->args[1].len == 0)
        return es_error_set(err, ES_EINTERNAL, NULL, NULL, "a write batch needs a version");
    key_prefix(&prefix, b, NULL);
    resp_array(&o, 1);
    resp_bulk(&o, "MULTI", 5);
    format_writes(&o, b, &prefix, 0, NULL, &ncmd, &last);
    if (last != 0) {
        format_checkpoint(&o, b, &prefix, last);
        ncmd++;
    }
    resp_array(&o, 1);
    resp_bulk(&o, "EXEC", 4);
    rc = es_buf_failed(&o) || es_buf_failed(&prefix)
             ? REDIS_ERR : redisAppendFormattedCommand(c, o.data, o.len);
    es_buf_reset(&o);
    b->wire = o;            /* kept for the next batch */
    es_buf_free(&prefix);
    if (rc != REDIS_OK)
        return redis_fail(c, NULL, err, "write");
    *replies = ncmd + 2;        /* OK, QUEUED per command, the EXEC array */
    return ES_OK;
}

es_status
es_rm_write_recv(redisContext *c, size_t replies, es_error *err)
{
    es_status st = ES_OK;
    size_t i, j;

    for (i = 0; i < replies; i++) {
        void *v = NULL;
        redisReply *r;

        if (redisGetReply(c, &v) != REDIS_OK)
            return redis_fail(c, NULL, err, "write");
        r = v;
        if (st == ES_OK && r->type == REDIS_REPLY_ERROR)
            st = redis_fail(c, r, err, "write");
        if (st == ES_OK && i == replies - 1) {
            if (r->type != REDIS_REPLY_ARRAY)
                st = redis_fail(c, r, err, "write (exec)");
            else
                for (j = 0; j < r->elements && st == ES_OK; j++)
                    if (r->element[j]->type == REDIS_REPLY_ERROR) {
                        /* the transaction ran: the commands around this one
                         * (the checkpoint included) are applied, so whatever
                         * Redis' reason, the version holds part of an event */
                        st = redis_fail(c, r->element[j], err, "write (exec)");
                        if (err != NULL)
                            err->transient = false;
                    }
        }
        freeReplyObject(r);
    }
    return st;
}

/* ---- versions --------------------------------------------------------- */

es_status
es_rm_checkpoint(redisContext *c, const char *name, const char *version, uint64_t *seq,
                 char *position, es_error *err)
{
    redisReply *r = redisCommand(c, "HMGET rm:%s:%s:checkpoint seq position", name, version);
    es_status st;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        st = redis_fail(c, r, err, "checkpoint");
        freeReplyObject(r);
        return st;
    }
    *seq = r->element[0]->type == REDIS_REPLY_STRING ? strtoull(r->element[0]->str, NULL, 10) : 0;
    if (position)
        copy_str(position, ES_RM_POSITION_MAX, r->element[1]);
    freeReplyObject(r);
    return ES_OK;
}

es_status
es_rm_state_get(redisContext *c, const char *name, es_rm_state *out, es_error *err)
{
    redisReply *r = redisCommand(c, "MGET rm:%s:active rm:%s:building", name, name);
    es_status st;

    memset(out, 0, sizeof *out);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        st = redis_fail(c, r, err, "state");
        freeReplyObject(r);
        return st;
    }
    copy_str(out->active, sizeof out->active, r->element[0]);
    copy_str(out->building, sizeof out->building, r->element[1]);
    freeReplyObject(r);
    if (out->active[0] == '\0')
        return ES_OK;
    return es_rm_checkpoint(c, name, out->active, &out->seq, out->position, err);
}

es_status
es_rm_switch(redisContext *c, const char *name, const char *version, bool *switched, es_error *err)
{
    redisReply *r = run_on(c, &SWITCH, name, version);
    es_status st = ES_OK;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        st = redis_fail(c, r, err, "switch");
    else
        *switched = r->element[0]->integer == 1;
    freeReplyObject(r);
    return st;
}

/*
 * Whether name and version can be put into a key pattern as they are: a
 * version is a decimal number (the layout only ever makes those) and a
 * name a plain identifier, so neither can carry a glob character or a
 * ':' that would make a SCAN pattern match another version's keys.
 */
static es_status
pattern_safe(const char *name, const char *version, es_error *err)
{
    size_t i;

    for (i = 0; version[i] != '\0'; i++)
        if (version[i] < '0' || version[i] > '9')
            break;
    if (i == 0 || version[i] != '\0' || i > 18)
        return es_error_set(err, ES_EINVALID, "version_invalid", "version",
                            "read-model version \"%.40s\" is not a decimal number", version);
    for (i = 0; name[i] != '\0'; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '_' || name[i] == '-'))
            break;
    if (i == 0 || name[i] != '\0' || i >= ES_RM_NAME_MAX)
        return es_error_set(err, ES_EINVALID, "projection_invalid", "name",
                            "projection name \"%.40s\" is not a plain identifier", name);
    return ES_OK;
}

es_status
es_rm_drop_version(redisContext *c, const char *name, const char *version, es_error *err)
{
    char cursor[32] = "0", pattern[128];
    redisReply *r;
    size_t i;

    if (pattern_safe(name, version, err) != ES_OK)
        return err->status;
    snprintf(pattern, sizeof pattern, "rm:%s:%s:*", name, version);
    do {
        r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            es_status st = redis_fail(c, r, err, "scan");
            freeReplyObject(r);
            return st;
        }
        copy_str(cursor, sizeof cursor, r->element[0]);
        if (r->element[1]->elements > 0) {
            const char **argv = malloc((r->element[1]->elements + 1) * sizeof *argv);
            size_t *lens = malloc((r->element[1]->elements + 1) * sizeof *lens);
            redisReply *d;

            if (argv == NULL || lens == NULL) {
                free(argv);
                free(lens);
                freeReplyObject(r);
                return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
            }
            argv[0] = "UNLINK";
            lens[0] = 6;
            for (i = 0; i < r->element[1]->elements; i++) {
                argv[i + 1] = r->element[1]->element[i]->str;
                lens[i + 1] = r->element[1]->element[i]->len;
            }
            d = redisCommandArgv(c, (int)i + 1, argv, lens);
            free(argv);
            free(lens);
            if (d == NULL || d->type == REDIS_REPLY_ERROR) {
                es_status st = redis_fail(c, d, err, "unlink");
                freeReplyObject(d);
                freeReplyObject(r);
                return st;
            }
            freeReplyObject(d);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    r = redisCommand(c, "SREM rm:%s:retired %s", name, version);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        es_status st = redis_fail(c, r, err, "srem");
        freeReplyObject(r);
        return st;
    }
    freeReplyObject(r);
    return ES_OK;
}

es_status
es_rm_version_new(redisContext *c, const char *name, char *out, size_t size, es_error *err)
{
    redisReply *r = run_on(c, &NEXT, name, NULL);
    es_status st = ES_OK;

    if (r == NULL || r->type != REDIS_REPLY_INTEGER)
        st = redis_fail(c, r, err, "next version");
    else
        snprintf(out, size, "%lld", r->integer);
    freeReplyObject(r);
    return st;
}

/* Checks and frees the reply r of a command: ok is the type it must have. */
static es_status
expect_reply(redisContext *c, redisReply *r, int ok, es_error *err, const char *what)
{
    es_status st = ES_OK;

    if (r == NULL || r->type != ok)
        st = redis_fail(c, r, err, what);
    freeReplyObject(r);
    return st;
}

es_status
es_rm_building_set(redisContext *c, const char *name, const char *version, es_error *err)
{
    redisReply *r = redisCommand(c, "SET rm:%s:building %s", name, version);

    return expect_reply(c, r, REDIS_REPLY_STATUS, err, "building");
}

es_status
es_rm_building_clear(redisContext *c, const char *name, es_error *err)
{
    redisReply *r = redisCommand(c, "DEL rm:%s:building", name);

    return expect_reply(c, r, REDIS_REPLY_INTEGER, err, "building");
}

es_status
es_rm_retired_list(redisContext *c, const char *name, char ***versions, size_t *n,
                   es_error *err)
{
    redisReply *r = redisCommand(c, "SMEMBERS rm:%s:retired", name);
    size_t i;

    *versions = NULL;
    *n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        es_status st = redis_fail(c, r, err, "retired");
        freeReplyObject(r);
        return st;
    }
    if (r->elements > 0 && (*versions = calloc(r->elements, sizeof **versions)) == NULL) {
        freeReplyObject(r);
        return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
    }
    for (i = 0; i < r->elements; i++) {
        if (((*versions)[i] = strdup(r->element[i]->str)) == NULL) {
            es_rm_list_free(*versions, i);
            *versions = NULL;
            freeReplyObject(r);
            return es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        }
    }
    *n = r->elements;
    freeReplyObject(r);
    return ES_OK;
}

void
es_rm_list_free(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

es_status
es_rm_lease_get(redisContext *c, const char *name, char *holder, size_t size, es_error *err)
{
    redisReply *r = redisCommand(c, "GET rm:%s:lease", name);
    es_status st = ES_OK;

    if (size > 0)
        holder[0] = '\0';
    if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
        st = redis_fail(c, r, err, "lease");
    else if (r->type == REDIS_REPLY_STRING && size > 0)
        copy_str(holder, size, r);
    freeReplyObject(r);
    return st;
}

/* ---- stop reports ----------------------------------------------------- */

es_status
es_rm_stopped_set(redisContext *c, const char *name, uint64_t seq, const char *position,
                  const char *reason, es_error *err)
{
    redisReply *r;

    if (position == NULL)
        r = redisCommand(c, "HSET rm:%s:stopped reason %s", name, reason);
    else
        r = redisCommand(c, "HSET rm:%s:stopped seq %" PRIu64 " position %s reason %s", name,
                         seq, position[0] ? position : "-", reason);
    return expect_reply(c, r, REDIS_REPLY_INTEGER, err, "stopped");
}

es_status
es_rm_stopped_clear(redisContext *c, const char *name, es_error *err)
{
    redisReply *r = redisCommand(c, "DEL rm:%s:stopped", name);

    return expect_reply(c, r, REDIS_REPLY_INTEGER, err, "stopped");
}

es_status
es_rm_stopped_get(redisContext *c, const char *name, bool *stopped, char *reason, size_t size,
                  es_error *err)
{
    redisReply *r = redisCommand(c, "HGET rm:%s:stopped reason", name);
    es_status st = ES_OK;

    *stopped = false;
    if (reason && size > 0)
        reason[0] = '\0';
    if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        st = redis_fail(c, r, err, "stopped");
    } else if (r->type == REDIS_REPLY_STRING) {
        *stopped = true;
        if (reason && size > 0)
            copy_str(reason, size, r);
    }
    freeReplyObject(r);
    return st;
}

/* ---- the rebuild lock ------------------------------------------------- */

es_status
es_rm_lock_take(redisContext *c, const char *name, const char *token, es_error *err)
{
    redisReply *r = redisCommand(c, "SET rm:%s:rebuilding %s NX PX " LEASE_MS, name, token);
    es_status st = ES_OK;

    if (r != NULL && r->type == REDIS_REPLY_NIL)
        st = es_error_set(err, ES_ECONFLICT, "rebuild_running", NULL,
                          "another rebuild of %s is running (key rm:%s:rebuilding)", name, name);
    else if (r == NULL || r->type != REDIS_REPLY_STATUS)
        st = redis_fail(c, r, err, "rebuild lock");
    freeReplyObject(r);
    return st;
}

es_status
es_rm_lock_renew(redisContext *c, const char *name, const char *token, es_error *err)
{
    redisReply *r = run_on(c, &RENEW, name, token);
    es_status st = ES_OK;

    if (r == NULL || r->type != REDIS_REPLY_INTEGER)
        st = redis_fail(c, r, err, "rebuild lock");
    else if (r->integer != 1)
        st = es_error_set(err, ES_ECONFLICT, "rebuild_lock_lost", NULL,
                          "this rebuild of %s lost its lock rm:%s:rebuilding; stopping", name,
                          name);
    freeReplyObject(r);
    return st;
}

void
es_rm_lock_release(redisContext *c, const char *name, const char *token)
{
    freeReplyObject(run_on(c, &RELEASE, name, token));
}

/* ---- notices ---------------------------------------------------------- */

es_status
es_rm_notice_subscribe(redisContext *c, const char *const *names, size_t n, es_error *err)
{
    const char **argv = calloc(n + 1, sizeof *argv);
    char (*chans)[ES_RM_NAME_MAX + 16] = calloc(n + 1, sizeof *chans);
    redisReply *r = NULL;
    es_status st = ES_OK;
    size_t i;

    if (argv == NULL || chans == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto done;
    }
    argv[0] = "SUBSCRIBE";
    for (i = 0; i < n; i++) {
        snprintf(chans[i], sizeof chans[i], "rm:%s:applied", names[i]);
        argv[i + 1] = chans[i];
    }
    /* Redis confirms each channel; the first confirmation is read here,
     * the others arrive with the notices */
    r = redisCommandArgv(c, (int)n + 1, argv, NULL);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        st = redis_fail(c, r, err, "subscribe");
done:
    freeReplyObject(r);
    free(chans);
    free(argv);
    return st;
}

bool
es_rm_notice_parse(const redisReply *r, es_rm_notice *out)
{
    const redisReply *ch, *msg;
    const char *name, *end, *seq, *pos;
    char *num_end;

    memset(out, 0, sizeof *out);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0)
        return false;
    ch = r->element[1];
    msg = r->element[2];
    if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING ||
        strncmp(ch->str, "rm:", 3) != 0 || ch->len < 3 + 8 ||
        strcmp(ch->str + ch->len - 8, ":applied") != 0)
        return false;
    name = ch->str + 3;
    end = ch->str + ch->len - 8;
    if (end - name <= 0 || end - name >= ES_RM_NAME_MAX)
        return false;
    memcpy(out->name, name, (size_t)(end - name));
    /* "<version> <seq> <position>" */
    if ((seq = strchr(msg->str, ' ')) == NULL || (size_t)(seq - msg->str) >= sizeof out->version ||
        (pos = strchr(seq + 1, ' ')) == NULL || strlen(pos + 1) >= sizeof out->position)
        return false;
    memcpy(out->version, msg->str, (size_t)(seq - msg->str));
    out->seq = strtoull(seq + 1, &num_end, 10);
    if (num_end != pos)
        out->seq = 0;           /* Lua wrote it as a float: unknown */
    snprintf(out->position, sizeof out->position, "%s", pos + 1);
    return true;
}

/* ---- reading ---------------------------------------------------------- */

/*
 * A read is atomic with its version's checkpoint.  The READ script does
 * that in one call, but Redis copies every reply into Lua and back (an
 * order's hash and history cost it about twice their bare commands), so
 * reads whose version is known go as plain commands in MULTI/EXEC:
 *
 *   version given (a pinned round)   MULTI, HMGET checkpoint, cmds, EXEC
 *   active, its version known here   MULTI, GET active, HMGET checkpoint,
 *                                    cmds, EXEC; a GET that names another
 *                                    version voids the answer --> script
 *   active, not known yet            the script, whose answer names it
 *
 * The active versions last seen are kept per thread (a read's connection
 * is its thread's), so a switch costs each thread one voided transaction.
 * A server whose ACL refuses MULTI (an older es_query user) gets the
 * script from then on.
 */

/* Projections whose active version a thread remembers. */
#define ACTIVE_SEEN_MAX 16

typedef struct active_seen {
    char name[ES_RM_NAME_MAX];
    char version[ES_RM_VERSION_MAX];
} active_seen;

static _Thread_local active_seen seen[ACTIVE_SEEN_MAX];
static _Thread_local size_t seen_next;
static atomic_bool tx_refused;

void
es_rm_tx_allow(void)
{
    atomic_store(&tx_refused, false);
}

bool
es_rm_reply_equal(const redisReply *a, const redisReply *b)
{
    size_t i;

    if (a->type != b->type)
        return false;
    switch (a->type) {
    case REDIS_REPLY_INTEGER:
        return a->integer == b->integer;
    case REDIS_REPLY_NIL:
        return true;
    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements)
            return false;
        for (i = 0; i < a->elements; i++)
            if (!es_rm_reply_equal(a->element[i], b->element[i]))
                return false;
        return true;
    default:
        return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    }
}

static active_seen *
seen_find(const char *name)
{
    size_t i;

    for (i = 0; i < ACTIVE_SEEN_MAX && seen[i].name[0]; i++)
        if (strcmp(seen[i].name, name) == 0)
            return &seen[i];
    return NULL;
}

/* Remembers version ("": none) as name's active one. */
static void
seen_set(const char *name, const char *version, size_t len)
{
    active_seen *a = seen_find(name);

    if (strlen(name) >= sizeof a->name)
        return;
    if (a == NULL) {
        a = &seen[seen_next];
        seen_next = (seen_next + 1) % ACTIVE_SEEN_MAX;
        snprintf(a->name, sizeof a->name, "%s", name);
    }
    if (len >= sizeof a->version)
        len = 0;
    memcpy(a->version, version, len);
    a->version[len] = '\0';
}

static es_status
read_script(redisContext *c, const char *name, const char *version,
            const char *const *const *cmds, size_t ncmds, redisReply **out, es_error *err)
{
    es_rm_batch b;
    redisReply *r;
    size_t i, j;
    es_status st = ES_OK;

    *out = NULL;
    es_rm_batch_init(&b, name, version);
    for (i = 0; i < ncmds; i++) {
        size_t argc = 0;
        while (cmds[i][argc])
            argc++;
        push_num(&b, (long long)argc);
        for (j = 0; j < argc; j++)
            push_bytes(&b, cmds[i][j], strlen(cmds[i][j]));
    }
    r = run_script(c, &READ, &b);
    es_rm_batch_free(&b);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[1]->type != REDIS_REPLY_INTEGER) {
        st = redis_fail(c, r, err, "read");
        freeReplyObject(r);
        return st;
    }
    if ((version == NULL || version[0] == '\0') && r->element[0]->type == REDIS_REPLY_STRING)
        seen_set(name, r->element[0]->str, r->element[0]->len);
    *out = r;
    return ES_OK;
}

/* A reply object of hiredis's shape (freeReplyObject frees it). */
static redisReply *
reply_new(int type)
{
    redisReply *r = calloc(1, sizeof *r);

    if (r != NULL)
        r->type = type;
    return r;
}

/* Turns string reply r into an integer one in place (0 when it is no
 * number: tonumber's nil in the script became 0 too). */
static void
reply_to_int(redisReply *r)
{
    long long v = 0;

    if (r->type == REDIS_REPLY_STRING) {
        v = strtoll(r->str, NULL, 10);
        free(r->str);
        r->str = NULL;
        r->len = 0;
    }
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
}

/* Turns nil reply r into an empty string in place (the script's "or ''");
 * false when out of memory. */
static bool
reply_nil_to_empty(redisReply *r)
{
    if (r->type != REDIS_REPLY_NIL)
        return true;
    if ((r->str = calloc(1, 1)) == NULL)
        return false;
    r->type = REDIS_REPLY_STRING;
    r->len = 0;
    return true;
}

typedef enum { TX_OK, TX_FAILED, TX_MOVED, TX_REFUSED } tx_outcome;

/*
 * The read as MULTI/EXEC on version, checking (check) that it is still
 * the active one.  TX_OK: *out has the script's shape {version, seq,
 * position, reply...}; TX_MOVED: the active version is another one (or
 * none), now remembered, and nothing was read; TX_REFUSED: Redis refused
 * MULTI or EXEC itself (the user's ACL); TX_FAILED: err says why.
 */
static tx_outcome
read_tx(redisContext *c, const char *name, const char *version, bool check,
        const char *const *const *cmds, size_t ncmds, redisReply **out, es_error *err)
{
    es_buf o = ES_BUF_INIT;
    char prefix[ES_RM_NAME_MAX + ES_RM_VERSION_MAX + 8];
    redisReply *exec = NULL, *cp, *ver = NULL, **el = NULL;
    size_t i, j, nreplies = ncmds + (check ? 4 : 3), base = check ? 2 : 1, plen;
    tx_outcome res = TX_FAILED;
    bool failed = false;

    *out = NULL;
    /* es_rm_read passes names and versions shorter than their maxima */
    plen = (size_t)snprintf(prefix, sizeof prefix, "rm:%s:%s:", name, version);
    resp_array(&o, 1);
    resp_bulk(&o, "MULTI", 5);
    if (check) {
        char key[ES_RM_NAME_MAX + 16];
        int n = snprintf(key, sizeof key, "rm:%s:active", name);

        resp_array(&o, 2);
        resp_bulk(&o, "GET", 3);
        resp_bulk(&o, key, (size_t)n);
    }
    resp_array(&o, 4);
    resp_bulk(&o, "HMGET", 5);
    resp_head(&o, '$', plen + 10);
    es_buf_append(&o, prefix, plen);
    es_buf_append(&o, "checkpoint\r\n", 12);
    resp_bulk(&o, "seq", 3);
    resp_bulk(&o, "position", 8);
    for (i = 0; i < ncmds; i++) {
        size_t argc = 0, klen;

        while (cmds[i][argc])
            argc++;
        resp_array(&o, argc);
        resp_bulk(&o, cmds[i][0], strlen(cmds[i][0]));
        klen = strlen(cmds[i][1]);
        resp_head(&o, '$', plen + klen);
        es_buf_append(&o, prefix, plen);
        es_buf_append(&o, cmds[i][1], klen);
        es_buf_append(&o, "\r\n", 2);
        for (j = 2; j < argc; j++)
            resp_bulk(&o, cmds[i][j], strlen(cmds[i][j]));
    }
    resp_array(&o, 1);
    resp_bulk(&o, "EXEC", 4);
    if (es_buf_failed(&o)) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory building a read");
        goto done;
    }
    if (redisAppendFormattedCommand(c, o.data, o.len) != REDIS_OK) {
        redis_fail(c, NULL, err, "read");
        goto done;
    }
    /* every reply is read, whatever came first, so the connection stays
     * in step: MULTI's OK, QUEUED per command, EXEC's array */
    for (i = 0; i < nreplies; i++) {
        void *v = NULL;
        redisReply *r;

        if (redisGetReply(c, &v) != REDIS_OK) {
            redis_fail(c, NULL, err, "read");
            res = TX_FAILED;
            goto done;
        }
        r = v;
        /* MULTI refused, or EXEC (Redis then discards the transaction:
         * "EXECABORT ... NOPERM ... 'exec'"): the script reads instead */
        if (r->type == REDIS_REPLY_ERROR &&
            ((i == 0 && strncmp(r->str, "NOPERM", 6) == 0) ||
             (i == nreplies - 1 && strstr(r->str, "NOPERM") != NULL &&
              strstr(r->str, "'exec'") != NULL)))
            res = TX_REFUSED;
        if (res != TX_REFUSED && !failed &&
            (r->type == REDIS_REPLY_ERROR || (i == nreplies - 1 && r->type != REDIS_REPLY_ARRAY))) {
            /* the first refusal says why (EXEC then only says EXECABORT) */
            redis_fail(c, r, err, "read");
            failed = true;
        }
        if (i == nreplies - 1 && res != TX_REFUSED && !failed) {
            exec = r;
            continue;
        }
        freeReplyObject(r);
    }
    if (res == TX_REFUSED || failed)
        goto done;
    if (exec->elements != base + ncmds) {
        es_error_set(err, ES_EINTERNAL, "redis_error", NULL,
                     "redis: read of \"%s\": %zu replies for %zu commands", name,
                     exec->elements, base + ncmds);
        goto done;
    }
    for (i = 0; i < exec->elements; i++)
        if (exec->element[i]->type == REDIS_REPLY_ERROR) {
            redis_fail(c, exec->element[i], err, "read");
            goto done;
        }
    if (check) {
        redisReply *a = exec->element[0];

        if (a->type != REDIS_REPLY_STRING || strcmp(a->str, version) != 0) {
            seen_set(name, a->type == REDIS_REPLY_STRING ? a->str : "",
                     a->type == REDIS_REPLY_STRING ? a->len : 0);
            res = TX_MOVED;
            goto done;
        }
    }
    cp = exec->element[base - 1];
    if (cp->type != REDIS_REPLY_ARRAY || cp->elements != 2) {
        redis_fail(c, cp, err, "read");
        goto done;
    }
    if (!check) {
        if ((ver = reply_new(REDIS_REPLY_STRING)) == NULL ||
            (ver->str = strdup(version)) == NULL) {
            es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory reading");
            goto done;
        }
        ver->len = strlen(version);
    }
    if ((el = calloc(3 + ncmds, sizeof *el)) == NULL ||
        !reply_nil_to_empty(cp->element[1])) {
        es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory reading");
        goto done;
    }
    /* {version, seq, position, reply...}, from the objects hiredis made */
    reply_to_int(cp->element[0]);
    el[0] = check ? exec->element[0] : ver;
    el[1] = cp->element[0];
    el[2] = cp->element[1];
    for (i = 0; i < ncmds; i++)
        el[3 + i] = exec->element[base + i];
    cp->elements = 0;
    freeReplyObject(cp);
    free(exec->element);
    exec->element = el;
    exec->elements = 3 + ncmds;
    el = NULL;
    ver = NULL;
    *out = exec;
    exec = NULL;
    res = TX_OK;
done:
    free(el);
    freeReplyObject(ver);
    freeReplyObject(exec);
    es_buf_free(&o);
    return res;
}

es_status
es_rm_read(redisContext *c, const char *name, const char *version, const char *const *const *cmds,
           size_t ncmds, redisReply **out, es_error *err)
{
    static const char *const *const none[1] = {NULL};
    bool pinned = version != NULL && version[0] != '\0';
    const active_seen *a;
    tx_outcome t;

    *out = NULL;
    if (cmds == NULL)
        cmds = none;
    if (atomic_load(&tx_refused) || strlen(name) >= ES_RM_NAME_MAX)
        return read_script(c, name, version, cmds, ncmds, out, err);
    if (!pinned) {
        a = seen_find(name);
        if (a == NULL || a->version[0] == '\0')
            return read_script(c, name, NULL, cmds, ncmds, out, err);
        version = a->version;
    } else if (strlen(version) >= ES_RM_VERSION_MAX) {
        return read_script(c, name, version, cmds, ncmds, out, err);
    }
    t = read_tx(c, name, version, !pinned, cmds, ncmds, out, err);
    switch (t) {
    case TX_OK:
        return ES_OK;
    case TX_REFUSED:
        atomic_store(&tx_refused, true);
        /* fall through */
    case TX_MOVED:
        return read_script(c, name, pinned ? version : NULL, cmds, ncmds, out, err);
    default:
        return err->status;
    }
}

const char *
es_rm_hash_get(const redisReply *hash, const char *field)
{
    size_t i;

    if (hash == NULL || hash->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (i = 0; i + 1 < hash->elements; i += 2)
        if (hash->element[i]->type == REDIS_REPLY_STRING && strcmp(hash->element[i]->str, field) == 0)
            return hash->element[i + 1]->type == REDIS_REPLY_STRING ? hash->element[i + 1]->str
                                                                     : NULL;
    return NULL;
}

/* ---- comparing versions ----------------------------------------------- */

static int
cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One key's contents as compact JSON: an object for a hash (field order
 * is not data), an array of the members in order otherwise. */
static char *
dump_key(redisContext *c, const char *key, const char *type)
{
    redisReply *v;
    json_t *parts;
    char *text;
    size_t j;

    if (strcmp(type, "hash") == 0)
        v = redisCommand(c, "HGETALL %s", key);
    else if (strcmp(type, "list") == 0)
        v = redisCommand(c, "LRANGE %s 0 -1", key);
    else if (strcmp(type, "zset") == 0)
        v = redisCommand(c, "ZRANGE %s 0 -1 WITHSCORES", key);
    else if (strcmp(type, "set") == 0)
        v = redisCommand(c, "SORT %s ALPHA", key);
    else
        v = redisCommand(c, "GET %s", key);
    if (v == NULL || v->type == REDIS_REPLY_ERROR) {
        freeReplyObject(v);
        return NULL;
    }
    if (strcmp(type, "hash") == 0) {
        parts = json_object();
        for (j = 0; j + 1 < v->elements; j += 2)
            json_object_set_new(parts, v->element[j]->str, json_string(v->element[j + 1]->str));
    } else {
        parts = json_array();
        if (v->type == REDIS_REPLY_ARRAY)
            for (j = 0; j < v->elements; j++)
                json_array_append_new(parts, json_string(v->element[j]->str));
        else if (v->type == REDIS_REPLY_STRING)
            json_array_append_new(parts, json_string(v->str));
    }
    text = json_dumps(parts, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(parts);
    freeReplyObject(v);
    return text;
}

es_status
es_rm_dump(redisContext *c, const char *name, const char *version, char ***lines, size_t *n,
           es_error *err)
{
    char cursor[32] = "0", prefix[ES_RM_NAME_MAX + 64];
    size_t cap = 0, plen;

    *lines = NULL;
    *n = 0;
    if (pattern_safe(name, version, err) != ES_OK)
        return err->status;
    snprintf(prefix, sizeof prefix, "rm:%s:%s:", name, version);
    plen = strlen(prefix);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s* COUNT 1000", cursor, prefix);
        size_t i;

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            es_rm_dump_free(*lines, *n);
            *lines = NULL;
            *n = 0;
            return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                "could not list the keys of version %s of %s%s%s", version, name,
                                c->err ? ": " : "", c->err ? c->errstr : "");
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (i = 0; i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            redisReply *t;
            char *text, *line;

            if (strcmp(key + plen, "checkpoint") == 0)
                continue;
            t = redisCommand(c, "TYPE %s", key);
            if (t == NULL || t->type != REDIS_REPLY_STATUS || strcmp(t->str, "none") == 0) {
                freeReplyObject(t);     /* gone meanwhile */
                continue;
            }
            text = dump_key(c, key, t->str);
            if (text == NULL || asprintf(&line, "%s\t%s\t%s", key + plen, t->str, text) < 0) {
                free(text);
                freeReplyObject(t);
                freeReplyObject(r);
                es_rm_dump_free(*lines, *n);
                *lines = NULL;
                *n = 0;
                return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                    "could not read %s", key);
            }
            free(text);
            freeReplyObject(t);
            if (*n == cap) {
                char **more = realloc(*lines, (cap = cap ? cap * 2 : 256) * sizeof *more);
                if (more == NULL)
                    abort();
                *lines = more;
            }
            (*lines)[(*n)++] = line;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    if (*n > 0)
        qsort(*lines, *n, sizeof **lines, cmp_lines);
    return ES_OK;
}

void
es_rm_dump_free(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

/* ---- traces -------------------------------------------------------------- */

static es_status
trace_append(redisContext *c, const es_rm_trace_stage *s, size_t n, int ttl_s, size_t *replies,
             es_error *err)
{
    /* per HSET: HSET key, then field and value per projection (16 at most) */
    const char *argv[2 + 2 * 16];
    size_t lens[2 + 2 * 16];
    char key[48], fields[16][ES_RM_NAME_MAX + 24], values[16][24];
    size_t i = 0, k;

    *replies = 0;
    while (i < n) {
        int argc = 2, m = 0;

        snprintf(key, sizeof key, "rm:trace:%.32s", s[i].trace_id);
        argv[0] = "HSET", lens[0] = 4;
        argv[1] = key, lens[1] = strlen(key);
        for (k = i; k < n && m < 16 && s[k].seq == s[i].seq &&
                    strcmp(s[k].trace_id, s[i].trace_id) == 0; k++, m++) {
            snprintf(fields[m], sizeof fields[m], "%" PRIu64 ":%s", s[k].seq, s[k].projection);
            snprintf(values[m], sizeof values[m], "%" PRId64, s[k].at_us);
            argv[argc] = fields[m], lens[argc++] = strlen(fields[m]);
            argv[argc] = values[m], lens[argc++] = strlen(values[m]);
        }
        if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK)
            return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                "redis: trace: %s", c->errstr);
        (*replies)++;
        if (k >= n || strcmp(s[k].trace_id, s[i].trace_id) != 0) {
            if (redisAppendCommand(c, "EXPIRE %s %d", key, ttl_s > 0 ? ttl_s : 1) != REDIS_OK)
                return es_error_set(err, ES_EUNAVAILABLE, "redis_unavailable", NULL,
                                    "redis: trace: %s", c->errstr);
            (*replies)++;
        }
        i = k;
    }
    return ES_OK;
}

static es_status
trace_read(redisContext *c, size_t replies, es_error *err)
{
    es_status st = ES_OK;

    for (; replies > 0; replies--) {
        redisReply *r = NULL;

        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            return redis_fail(c, NULL, err, "trace");
        if (st == ES_OK && r->type != REDIS_REPLY_INTEGER)
            st = redis_fail(c, r, err, "trace");
        freeReplyObject(r);
    }
    return st;
}

es_status
es_rm_trace_put(redisContext *c, const es_rm_trace_stage *s, size_t n, int ttl_s, es_error *err)
{
    size_t replies = 0;

    if (trace_append(c, s, n, ttl_s, &replies, err) != ES_OK)
        return err->status;
    return trace_read(c, replies, err);
}

/* The error of a trace whose record is over the reader's cap. */
static es_status
too_many_records(const char *id, long long have, size_t max, es_error *err)
{
    return es_error_set(err, ES_ERULE, "trace_too_large", "trace",
                        "trace %s has %lld stage records, more than the %zu one trace view "
                        "reads (ES_TRACE_RECORDS_MAX); its events can be read a page at a "
                        "time through the feed or their correlation id",
                        id, have, max);
}

size_t
es_rm_trace_records_max(void)
{
    return (size_t)es_env_long(NULL, "ES_TRACE_RECORDS_MAX", ES_RM_TRACE_RECORDS_MAX_DEFAULT, 1,
                               1000000);
}

es_status
es_rm_trace_get(redisContext *c, const char *trace_id, es_rm_trace_stage **out, size_t *n,
                es_error *err)
{
    size_t max = es_rm_trace_records_max();
    char id[33];
    redisReply *r;
    es_rm_trace_stage *s = NULL;
    es_status st = ES_OK;
    size_t i, m = 0;

    *out = NULL;
    *n = 0;
    snprintf(id, sizeof id, "%s", trace_id);    /* hiredis takes no precision */
    /* Anyone may send a command a traceparent, so one trace id can
     * gather any number of records: count them before reading them all
     * (and again after, as the record may have grown in between). */
    r = redisCommand(c, "HLEN rm:trace:%s", id);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        st = redis_fail(c, r, err, "trace");
        goto done;
    }
    if ((unsigned long long)r->integer > (unsigned long long)max) {
        st = too_many_records(id, (long long)r->integer, max, err);
        goto done;
    }
    freeReplyObject(r);
    r = redisCommand(c, "HGETALL rm:trace:%s", id);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        st = redis_fail(c, r, err, "trace");
        goto done;
    }
    if (r->elements / 2 > max) {
        st = too_many_records(id, (long long)(r->elements / 2), max, err);
        goto done;
    }
    if (r->elements >= 2 && (s = calloc(r->elements / 2, sizeof *s)) == NULL) {
        st = es_error_set(err, ES_ENOMEM, NULL, NULL, "out of memory");
        goto done;
    }
    for (i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        char *colon;
        unsigned long long seq;

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            (colon = strchr(f->str, ':')) == NULL || sscanf(f->str, "%llu:", &seq) != 1)
            continue;       /* not a field this module wrote */
        snprintf(s[m].trace_id, sizeof s[m].trace_id, "%s", id);
        s[m].seq = seq;
        snprintf(s[m].projection, sizeof s[m].projection, "%s", colon + 1);
        s[m].at_us = strtoll(v->str, NULL, 10);
        m++;
    }
    if (m == 0) {
        free(s);
        s = NULL;
    }
    *out = s;
    *n = m;
done:
    freeReplyObject(r);
    return st;
}
