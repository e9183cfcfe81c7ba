// `ravnest-rt profile`: measures this machine and writes its device profile (docs/devices.md).
#pragma once

namespace ravnest::tools {

// argv[0] is "profile". Returns the process exit status (0 ok, 1 error, 2 usage).
int profile_main(int argc, char** argv);

}  // namespace ravnest::tools
