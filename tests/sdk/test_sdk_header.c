/* tests/sdk/test_sdk_header.c — vidi_client.h alone, compiled as strict C99
 * (-std=c99 -pedantic -Werror, no other vidi header): the defaults and the
 * part constructors are what the header says, a failed connect leaves a
 * message, and calls with bad arguments fail with E_INVALID and a message
 * instead of crashing. Linked to the shared library. Label unit. */
#include <stdio.h>
#include <string.h>

#include "vidi_client.h"

static int failures;
#define EXPECT(cond)                                                      \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: FAIL %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                   \
        }                                                                 \
    } while (0)

int main(void) {
    vidi_client_params cp = vidi_client_params_default();
    EXPECT(cp.request_timeout_ms == 120000 && !cp.curve_server_key && !cp.curve_public_key && !cp.curve_secret_key);
    vidi_client_request_params rp = vidi_client_request_params_default();
    EXPECT(rp.max_tokens == 128 && rp.temperature == 0.0 && rp.top_p == 1.0 && rp.top_k == 0 && rp.seed == -1 &&
           rp.stream == 1 && rp.n_stop == 0 && rp.n_stop_ids == 0);
    static const unsigned char bytes[4] = {1, 2, 3, 4};
    vidi_client_part t = vidi_client_part_text("hi");
    vidi_client_part i = vidi_client_part_image(bytes, sizeof bytes);
    vidi_client_part v = vidi_client_part_video_file("clip.mp4");
    EXPECT(t.type == VIDI_CLIENT_PART_TEXT && !strcmp(t.text, "hi") && !t.data && !t.path);
    EXPECT(i.type == VIDI_CLIENT_PART_IMAGE && i.data == bytes && i.size == 4 && !i.path && i.fps == 0.0);
    EXPECT(v.type == VIDI_CLIENT_PART_VIDEO && !strcmp(v.path, "clip.mp4") && !v.data && v.nframes == 0);
    EXPECT(!strcmp(vidi_client_status_name(VIDI_CLIENT_OK), "ok"));
    EXPECT(!strcmp(vidi_client_status_name(VIDI_CLIENT_E_SERVER), "server"));
    EXPECT(!strcmp(vidi_client_status_name(99), "unknown"));

    char ep[256];
    EXPECT(vidi_client_default_endpoint(ep, sizeof ep) == ep && !strncmp(ep, "ipc://", 6) &&
           strstr(ep, "/front") != NULL);

    /* bad arguments */
    vidi_client *c = NULL;
    EXPECT(vidi_client_connect(NULL, NULL, &c) == VIDI_CLIENT_E_INVALID && c == NULL);
    EXPECT(strstr(vidi_client_last_error(NULL), "endpoint") != NULL);
    cp.curve_server_key = "only-one-key";
    EXPECT(vidi_client_connect("ipc:///nonexistent/front", &cp, &c) == VIDI_CLIENT_E_INVALID);
    EXPECT(strstr(vidi_client_last_error(NULL), "CURVE") != NULL);
    EXPECT(vidi_client_connect("nonsense://x", NULL, &c) != VIDI_CLIENT_OK && c == NULL);
    EXPECT(vidi_client_connect("ipc:///nonexistent-vidi-dir/front", NULL, &c) == VIDI_CLIENT_OK && c);
    if (c) {
        uint64_t id = 0;
        EXPECT(vidi_client_ask(c, NULL, NULL, 0, NULL, &id) == VIDI_CLIENT_E_INVALID);
        EXPECT(vidi_client_submit(c, NULL, 0, NULL, &id) == VIDI_CLIENT_E_INVALID);
        vidi_client_message m = {"robot", &t, 1};
        EXPECT(vidi_client_submit(c, &m, 1, NULL, &id) == VIDI_CLIENT_E_INVALID);
        EXPECT(strstr(vidi_client_last_error(c), "role") != NULL);
        rp.max_tokens = 0;
        EXPECT(vidi_client_ask(c, "q", NULL, 0, &rp, &id) == VIDI_CLIENT_E_INVALID);
        rp = vidi_client_request_params_default();
        vidi_client_part missing = vidi_client_part_image_file("/nonexistent/image.png");
        EXPECT(vidi_client_ask(c, "q", &missing, 1, &rp, &id) == VIDI_CLIENT_E_FILE);
        EXPECT(strstr(vidi_client_last_error(c), "/nonexistent/image.png") != NULL);
        EXPECT(vidi_client_ask(c, "q", &t, 1, &rp, &id) == VIDI_CLIENT_E_INVALID); /* text is not media */
        EXPECT(vidi_client_cancel(c, 12345) == VIDI_CLIENT_E_NOT_FOUND);
        vidi_client_event ev;
        EXPECT(vidi_client_poll(c, 10, &ev) == VIDI_CLIENT_OK && ev.type == VIDI_CLIENT_EV_NONE);
        vidi_client_close(c);
    }
    vidi_client_close(NULL);
    printf("%s\n", failures ? "FAILED" : "vidi_client.h: defaults, constructors and argument checks as documented");
    return failures ? 1 : 0;
}
