/* The library's version, as built (see OUTBOX_VERSION in outbox/outbox.h). */
#include "outbox/outbox.h"

int outbox_version(void)
{
    return OUTBOX_VERSION;
}

const char *outbox_version_str(void)
{
    return OUTBOX_VERSION_STR;
}
