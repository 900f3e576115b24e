#include "statesync/sessiontable/session_table.h"
#include <gtest/gtest.h>
TEST(SessionTable, Builds) { statesync::SessionTable t; EXPECT_EQ(t.total_size(), 0u); }
