/* outboxctl status --watch: the status, refreshed in place like top(1).
 *
 * On a terminal each snapshot is drawn into a buffer first and then replaces
 * the screen in one write (no flicker); q or Ctrl-C quits and the terminal
 * is restored. When stdout is not a terminal (a pipe, a log file) it prints
 * successive snapshots instead: text ones separated by a "--- time ---"
 * line, JSON ones as one document per line. A failed snapshot (database
 * gone) is shown and the watch goes on. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "ctl.h"

static volatile sig_atomic_t stop_watch;

static void on_signal(int sig)
{
    (void)sig;
    stop_watch = 1;
}

static void clock_text(char *buf, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(buf, size, "%H:%M:%S", &tm);
}

/* Waits up to ms for a key on a raw-mode terminal; 1 if it asks to quit. */
static int wait_key(int tty_in, int64_t ms)
{
    int64_t until = outbox__now_ms() + ms;
    while (!stop_watch) {
        int64_t left = until - outbox__now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int n = poll(tty_in ? &p : NULL, tty_in ? 1 : 0, (int)left);
        if (n < 0 && errno != EINTR)
            return 0;
        if (n > 0) {
            char c;
            if (read(STDIN_FILENO, &c, 1) != 1)
                return 0;
            if (c == 'q' || c == 'Q' || c == 3 /* Ctrl-C in raw mode */ || c == 27)
                return 1;
            return 0; /* any other key: refresh now */
        }
    }
    return 1;
}

int ctl_watch(outbox_store_t *s, int json, int64_t interval_ms, long count)
{
    int tty_out = isatty(STDOUT_FILENO), tty_in = tty_out && isatty(STDIN_FILENO);
    struct termios saved;
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll wakes up */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (tty_in && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        tty_in = 0;
    }
    if (tty_out)
        fputs("\033[?1049h\033[?25l", stdout); /* alternate screen, hide the cursor */
    int rc = 0;
    for (long n = 0; !stop_watch && (!count || n < count); n++) {
        char *frame = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&frame, &len);
        if (!mem) {
            rc = ctl_fail(OUTBOX_ERR_NOMEM, "status --watch", "out of memory");
            break;
        }
        char now[16];
        clock_text(now, sizeof(now));
        if (tty_out)
            fprintf(mem, "outboxctl status --watch   every %.1fs   %s   (q to quit)\n\n",
                    (double)interval_ms / 1000, now);
        else if (!json)
            fprintf(mem, "--- %s ---\n", now);
        /* Errors of one snapshot go to stderr and into the frame. */
        rc = ctl_status_once(s, json, mem);
        if (rc && tty_out)
            fprintf(mem, "\n(snapshot failed: see the message above; retrying)\n");
        fclose(mem);
        if (tty_out) {
            fputs("\033[H\033[2J", stdout);
            /* A raw terminal does not add carriage returns: each line ends "\r\n"
             * only in cooked output mode, which we keep (only input is raw). */
        }
        fwrite(frame, 1, len, stdout);
        fflush(stdout);
        free(frame);
        if (count && n + 1 >= count)
            break;
        if (wait_key(tty_in, interval_ms))
            break;
    }
    if (tty_out)
        fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    if (tty_in)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return count ? rc : 0; /* quitting a watch is not a failure */
}
