// Picking a free TCP port on loopback for local multi-process runs and tests.
#pragma once

namespace ravnest {

// A port the kernel reports free on 127.0.0.1 (bind to port 0, read it back,
// release it); -1 if none could be had. Another process may take it before the
// caller binds it: callers use it promptly.
int free_loopback_port();

}  // namespace ravnest
