/*
 * Helpers shared by the libcurl sinks (http.c, opensearch.c) and the file
 * sink: the libcurl settings every request needs, reading libcurl outcomes,
 * and text for error messages. (Growable buffers: core/buf.h.)
 *
 * Header-only (static inline): the build registers every src/sink/NAME.c as
 * a sink, so shared code cannot live in a .c file here.
 */
#ifndef OUTBOX_SINK_SINK_COMMON_H
#define OUTBOX_SINK_SINK_COMMON_H

#include "core/buf.h"
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* outbox__buf_t: see core/buf.h */

/* ------------------------------------------------------------------------ */
/* libcurl                                                                   */

static inline void outbox__curl_global_init_once_fn(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/** curl_global_init exactly once per process (before the first handle). */
static inline void outbox__curl_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, outbox__curl_global_init_once_fn);
}

/** CURLOPT_WRITEFUNCTION appending to an outbox__buf_t (in userdata); past
 *  the buffer's cap the rest of the body is dropped and ->broken is set. */
static inline size_t outbox__curl_write_buf(char *data, size_t size, size_t nmemb, void *userdata)
{
    outbox__buf_t *b = userdata;
    size_t n = size * nmemb, max = b->max ? b->max : ((size_t)1 << 30);
    size_t room = b->len + 1 < max ? max - b->len - 1 : 0;
    outbox__buf_add(b, data, n < room ? n : room); /* keep the prefix that fits */
    if (n > room)
        b->broken = 1;
    return n;
}

/**
 * The transport failed before any HTTP exchange: the endpoint is unreachable
 * (name resolution, TCP connect, TLS handshake or certificate check, or a
 * timeout while still connecting). h is the handle of the failed transfer.
 */
static inline int outbox__curl_unreachable(CURL *h, CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
        return 1;
    case CURLE_OPERATION_TIMEDOUT: {
        /* Connected if a connect took time or, on a reused keep-alive
         * connection (connect time 0), if the request went out. */
        curl_off_t connect_us = 0;
        long request_bytes = 0;
        curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
        curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &request_bytes);
        return connect_us == 0 && request_bytes == 0;
    }
    default:
        return 0;
    }
}

/**
 * Applies the options every sink request needs: no signals (threads), no
 * redirects, http/https only, keep-alive, TLS verification unless insecure
 * (which the caller has logged loudly), an optional CA file.
 */
static inline void outbox__curl_common_opts(CURL *h, const char *ca_file, int insecure)
{
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "outbox/" OUTBOX_VERSION_STR);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, insecure ? 0L : 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, insecure ? 0L : 2L);
    if (ca_file && *ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
}

/** Copies at most out_size-1 bytes of s into out, replacing control
 *  characters by spaces (for error messages quoting a response body). */
static inline void outbox__printable(const char *s, size_t n, char *out, size_t out_size)
{
    size_t j = 0;
    for (size_t i = 0; i < n && s[i] && j + 1 < out_size; i++)
        out[j++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
    if (out_size)
        out[j] = '\0';
}

/**
 * Writes "scheme://host[:port]" of url into out: the part of a sink URL that
 * is safe in logs and error messages (webhook paths and queries often carry
 * tokens; user info carries passwords). "(invalid URL)" if it doesn't parse.
 */
static inline void outbox__url_origin(const char *url, char *out, size_t out_size)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        snprintf(out, out_size, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "");
    } else {
        snprintf(out, out_size, "(invalid URL)");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

/** Seconds of a Retry-After the server sent (CURLINFO_RETRY_AFTER handles
 *  both delta-seconds and HTTP-date) as milliseconds, capped at max_ms; 0 if none. */
static inline int64_t outbox__curl_retry_after_ms(CURL *h, int64_t max_ms)
{
    curl_off_t secs = 0;
    if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &secs) != CURLE_OK || secs <= 0)
        return 0;
    int64_t ms = (int64_t)secs * 1000;
    return max_ms > 0 && ms > max_ms ? max_ms : ms;
}

#endif
